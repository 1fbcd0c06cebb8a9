package fhirsource

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/golang-jwt/jwt/v5"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

func TestStaticToken(t *testing.T) {
	_, hs := upstream(t, fhirtest.Options{Token: "s3cret"})
	for _, tc := range []struct {
		auth Authorizer
		ok   bool
	}{{StaticToken("s3cret"), true}, {StaticToken("wrong"), false}, {nil, false}} {
		s := newSource(t, hs.URL, func(o *Options) { o.Auth = tc.auth })
		_, err := s.Types(context.Background())
		if (err == nil) != tc.ok {
			t.Errorf("auth %v: err = %v", tc.auth, err)
		}
	}
}

// tokenEndpoint is a SMART Backend Services token endpoint that checks the
// client assertion's signature, algorithm and claims, and issues tokens.
type tokenEndpoint struct {
	t        *testing.T
	pub      crypto.PublicKey
	alg      string
	aud      string
	mu       sync.Mutex
	issued   []string
	lifetime int
}

func (e *tokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" || f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || f.Get("scope") == "" {
		http.Error(w, `{"error":"invalid_request"}`, 400)
		return
	}
	claims := jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(f.Get("client_assertion"), &claims, func(tok *jwt.Token) (any, error) {
		if tok.Method.Alg() != e.alg {
			return nil, fmt.Errorf("alg %s, want %s", tok.Method.Alg(), e.alg)
		}
		if tok.Header["kid"] != "key-1" {
			return nil, fmt.Errorf("kid %v", tok.Header["kid"])
		}
		return e.pub, nil
	}, jwt.WithAudience(e.aud), jwt.WithIssuer("client-1"), jwt.WithSubject("client-1"), jwt.WithExpirationRequired())
	if err != nil || claims.ID == "" {
		http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
		return
	}
	e.mu.Lock()
	tok := fmt.Sprintf("token-%d", len(e.issued)+1)
	e.issued = append(e.issued, tok)
	e.mu.Unlock()
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":%d,"scope":%q}`, tok, e.lifetime, f.Get("scope"))
}

func TestBackendServices(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		alg string
		key crypto.Signer
	}{{"RS384", rsaKey}, {"ES384", ecKey}} {
		t.Run(tc.alg, func(t *testing.T) {
			der, err := x509.MarshalPKCS8PrivateKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			key, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
			if err != nil {
				t.Fatal(err)
			}
			ep := &tokenEndpoint{t: t, pub: tc.key.Public(), alg: tc.alg, lifetime: 300}
			ts := httptest.NewServer(ep)
			defer ts.Close()
			ep.aud = ts.URL + "/token"

			// The upstream accepts only the latest issued token.
			var current string
			var mu sync.Mutex
			_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
				mu.Lock()
				defer mu.Unlock()
				ep.mu.Lock()
				defer ep.mu.Unlock()
				if len(ep.issued) == 0 || r.Header.Get("Authorization") != "Bearer "+ep.issued[len(ep.issued)-1] {
					return &fhirtest.Fault{Status: 401}
				}
				current = r.Header.Get("Authorization")
				return nil
			}})
			auth := &BackendServices{ClientID: "client-1", TokenURL: ts.URL + "/token", Key: key, KeyID: "key-1"}
			s := newSource(t, hs.URL, func(o *Options) { o.Auth = auth })
			got, _ := readType(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Patient", 0)
			if len(got) == 0 || current == "" {
				t.Fatal("nothing read")
			}
			if n := len(ep.issued); n != 1 {
				t.Fatalf("%d tokens requested for one export: the token is not cached", n)
			}
			// A token the upstream stops accepting is replaced once.
			ep.mu.Lock()
			ep.issued = []string{"revoked"}
			ep.mu.Unlock()
			if err := s.Ready(context.Background()); err != nil {
				t.Fatalf("after the token was revoked: %v", err)
			}
			if n := len(ep.issued); n != 2 {
				t.Fatalf("%d tokens issued, want a second one after the 401", n)
			}
		})
	}
}

func TestBackendServicesRejectsWrongCurve(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b := &BackendServices{ClientID: "c", TokenURL: "http://127.0.0.1:1/token", Key: k}
	if _, err := b.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "P-384") {
		t.Fatalf("err = %v", err)
	}
}

func TestSigV4(t *testing.T) {
	creds := credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", "secret", "")
	var mu sync.Mutex
	checked := 0
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		// Sign the received request again with the same time; the
		// signatures must agree.
		got := r.Header.Get("Authorization")
		when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
		if err != nil || !strings.HasPrefix(got, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/") || !strings.Contains(got, "/us-east-1/healthlake/aws4_request") {
			return &fhirtest.Fault{Status: 403}
		}
		clone := r.Clone(context.Background())
		_, signed, _ := strings.Cut(got, "SignedHeaders=")
		signed, _, _ = strings.Cut(signed, ",")
		keep := map[string]bool{}
		for _, h := range strings.Split(signed, ";") {
			keep[http.CanonicalHeaderKey(h)] = true
		}
		for h := range clone.Header {
			if !keep[h] || h == "X-Amz-Date" {
				clone.Header.Del(h)
			}
		}
		clone.URL.Scheme, clone.URL.Host = "http", r.Host
		c, _ := creds.Retrieve(context.Background())
		hash := r.Header.Get("X-Amz-Content-Sha256")
		if err := v4.NewSigner().SignHTTP(context.Background(), c, clone, hash, "healthlake", "us-east-1", when); err != nil {
			return &fhirtest.Fault{Status: 500}
		}
		if clone.Header.Get("Authorization") != got {
			return &fhirtest.Fault{Status: 403}
		}
		mu.Lock()
		checked++
		mu.Unlock()
		return nil
	}})
	s := newSource(t, hs.URL, func(o *Options) {
		o.Auth = &SigV4{Credentials: aws.CredentialsProvider(creds), Region: "us-east-1"}
	})
	got, bad := readType(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until,
		TypeFilters: []string{"status=final", "category=laboratory"}}, "Observation", 0)
	if len(bad) > 0 || len(got) != len(ofTypes(sample(t).src, "Observation")) {
		t.Fatalf("read %d, errors %v", len(got), bad)
	}
	if checked < 4 { // GETs and the POST _search dedupe checks
		t.Fatalf("%d signed requests verified", checked)
	}
}
