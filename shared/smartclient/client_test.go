package smartclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenServer is a token endpoint that checks the assertion the way
// Medplum does (aud must be a string) and counts the tokens it issues.
func tokenServer(t *testing.T, key *ecdsa.PrivateKey, expiresIn int, discovery bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var issued atomic.Int32
	mux := http.NewServeMux()
	var srv *httptest.Server
	mux.HandleFunc("/fhir/.well-known/smart-configuration", func(w http.ResponseWriter, r *http.Request) {
		if !discovery {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"token_endpoint": srv.URL + "/token"})
	})
	mux.HandleFunc("/fhir/metadata", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"resourceType":"CapabilityStatement","rest":[{"security":{"extension":[{"url":"http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris","extension":[{"url":"token","valueUri":"` + srv.URL + `/token"}]}]}}]}`))
	})
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("client_assertion_type") != AssertionType {
			http.Error(w, `{"error":"invalid_request"}`, 400)
			return
		}
		claims := jwt.MapClaims{}
		tok, err := jwt.ParseWithClaims(r.PostForm.Get("client_assertion"), claims, func(*jwt.Token) (any, error) { return &key.PublicKey, nil },
			jwt.WithValidMethods([]string{"ES384"}), jwt.WithExpirationRequired())
		if err != nil {
			http.Error(w, `{"error":"invalid_client"}`, http.StatusUnauthorized)
			return
		}
		if aud, ok := claims["aud"].(string); !ok || aud != srv.URL+"/token" {
			t.Errorf("aud = %#v, want the string %s", claims["aud"], srv.URL+"/token")
		}
		if claims["iss"] != "c1" || claims["sub"] != "c1" || claims["jti"] == "" || tok.Header["kid"] == "" {
			t.Errorf("assertion claims %v header %v", claims, tok.Header)
		}
		n := issued.Add(1)
		json.NewEncoder(w).Encode(map[string]any{"access_token": "tok-" + string(rune('0'+n)), "token_type": "bearer", "expires_in": expiresIn})
	})
	srv = httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, &issued
}

func TestTokenSource(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, discovery := range []bool{true, false} {
		srv, issued := tokenServer(t, key, 300, discovery)
		now := time.Now()
		ts := &TokenSource{ClientID: "c1", FHIRBase: srv.URL + "/fhir", Key: key, Now: func() time.Time { return now }}
		ctx := context.Background()
		first, err := ts.Token(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ts.TokenURL != srv.URL+"/token" {
			t.Errorf("discovered %s (well-known %v)", ts.TokenURL, discovery)
		}
		// Reused until a minute before expiry, then renewed.
		now = now.Add(3*time.Minute + 59*time.Second)
		if tok, _ := ts.Token(ctx); tok != first || issued.Load() != 1 {
			t.Errorf("token renewed %d times before its last minute", issued.Load()-1)
		}
		now = now.Add(2 * time.Second)
		if tok, _ := ts.Token(ctx); tok == first || issued.Load() != 2 {
			t.Errorf("token not renewed in its last minute (issued %d)", issued.Load())
		}
		// After a 401 the caller invalidates: the next call gets a new one.
		ts.Invalidate()
		if _, err := ts.Token(ctx); err != nil || issued.Load() != 3 {
			t.Errorf("after Invalidate: issued %d, %v", issued.Load(), err)
		}
	}
}

func TestTokenSourceErrors(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	srv, _ := tokenServer(t, key, 300, true)
	ts := &TokenSource{ClientID: "c1", FHIRBase: srv.URL + "/fhir", Key: other}
	if _, err := ts.Token(context.Background()); err == nil {
		t.Error("a token was issued for an assertion signed with the wrong key")
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := SigningMethod(p256); err == nil {
		t.Error("a P-256 key was accepted for ES384")
	}
	if _, err := Discover(context.Background(), http.DefaultClient, srv.URL+"/nothing"); err == nil {
		t.Error("discovery found a token endpoint where there is none")
	}
}

func TestPublicJWK(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	a, err := PublicJWK(key, "")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := PublicJWK(key, "")
	if a.KeyID == "" || a.KeyID != b.KeyID || !a.IsPublic() || a.Algorithm != "ES384" {
		t.Errorf("PublicJWK = %+v", a)
	}
	if c, _ := PublicJWK(key, "mine"); c.KeyID != "mine" {
		t.Errorf("kid %q, want mine", c.KeyID)
	}
}
