package smartauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// memReplay is a ReplayCache as strict as the real ones: a key is refused
// until its expiry.
type memReplay struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

func (m *memReplay) Claim(_ context.Context, key string, until time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.seen == nil {
		m.seen = map[string]time.Time{}
	}
	if t, ok := m.seen[key]; ok && time.Now().Before(t) {
		return ErrReplay
	}
	m.seen[key] = until
	return nil
}

func jwksOf(t *testing.T, keys ...jose.JSONWebKey) []byte {
	t.Helper()
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixture is a token endpoint with an ES384 client registered by JWKS
// value and an RS384 client registered by JWKS URL.
type fixture struct {
	srv      *httptest.Server
	tokenURL string
	ecKey    *ecdsa.PrivateKey
	rsaKey   *rsa.PrivateKey
	keys     *Keys
	fetches  atomic.Int32
	jwksURL  string
	clients  StaticClients
}

func newFixture(t *testing.T, cacheControl string) *fixture {
	t.Helper()
	f := &fixture{}
	var err error
	if f.ecKey, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if f.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	rsJWKS := jwksOf(t, jose.JSONWebKey{Key: &f.rsaKey.PublicKey, KeyID: "rs-1", Algorithm: "RS384", Use: "sig"})
	keySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.fetches.Add(1)
		if cacheControl != "" {
			w.Header().Set("Cache-Control", cacheControl)
		}
		w.Write(rsJWKS)
	}))
	t.Cleanup(keySrv.Close)
	f.jwksURL = keySrv.URL + "/jwks.json"
	tokKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if f.keys, err = NewECKeys(tokKey); err != nil {
		t.Fatal(err)
	}
	f.clients = StaticClients{
		"es":            {ClientID: "es", Scope: "system/*.read", JWKS: jwksOf(t, jose.JSONWebKey{Key: &f.ecKey.PublicKey, KeyID: "es-1", Algorithm: "ES384"})},
		"rs":            {ClientID: "rs", Scope: "system/*.rs", JWKSURL: f.jwksURL},
		"patients-only": {ClientID: "patients-only", Scope: "system/Patient.read", JWKS: jwksOf(t, jose.JSONWebKey{Key: &f.ecKey.PublicKey, KeyID: "es-1"})},
		"twins": {ClientID: "twins", Scope: "system/*.read", JWKS: jwksOf(t,
			jose.JSONWebKey{Key: &f.ecKey.PublicKey, KeyID: "same"}, jose.JSONWebKey{Key: &f.ecKey.PublicKey, KeyID: "same"})},
	}
	for _, c := range f.clients {
		if err := c.Validate(); err != nil {
			t.Fatalf("fixture client: %v", err)
		}
	}
	s := &Server{Clients: f.clients, Replay: &memReplay{}, Keys: f.keys, JWKS: &JWKSFetcher{}, BasePath: "/fhir", Log: slog.New(slog.DiscardHandler)}
	f.srv = httptest.NewServer(s)
	t.Cleanup(f.srv.Close)
	f.tokenURL = f.srv.URL + "/fhir" + TokenPath
	return f
}

// assertion describes a client assertion; zero fields get valid values.
type assertion struct {
	client, iss, sub, kid, jti, jku, alg string
	aud                                  any
	exp                                  time.Duration
	noExp                                bool
	key                                  crypto.Signer
}

func (f *fixture) sign(t *testing.T, a assertion) string {
	t.Helper()
	if a.client == "" {
		a.client = "es"
	}
	if a.iss == "" {
		a.iss = a.client
	}
	if a.sub == "" {
		a.sub = a.client
	}
	if a.aud == nil {
		a.aud = f.tokenURL
	}
	if a.jti == "" {
		a.jti = randomID()
	}
	if a.exp == 0 {
		a.exp = 4 * time.Minute
	}
	method := jwt.SigningMethod(jwt.SigningMethodES384)
	key := crypto.Signer(f.ecKey)
	kid := "es-1"
	if a.client == "rs" {
		method, key, kid = jwt.SigningMethodRS384, f.rsaKey, "rs-1"
	}
	if a.alg == "RS256" {
		method = jwt.SigningMethodRS256
	}
	if a.key != nil {
		key = a.key
	}
	if a.kid != "" {
		kid = a.kid
	}
	claims := jwt.MapClaims{"iss": a.iss, "sub": a.sub, "aud": a.aud, "jti": a.jti}
	if !a.noExp {
		claims["exp"] = time.Now().Add(a.exp).Unix()
	}
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = kid
	if a.jku != "" {
		tok.Header["jku"] = a.jku
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) form(assertion, scope string) url.Values {
	v := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {AssertionType},
		"client_assertion":      {assertion},
	}
	if scope != "-" {
		v.Set("scope", scope)
	}
	return v
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
}

func (f *fixture) post(t *testing.T, contentType, body string) reply {
	t.Helper()
	resp, err := http.Post(f.tokenURL, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, header: resp.Header}
	if err := json.NewDecoder(resp.Body).Decode(&r.body); err != nil {
		t.Fatalf("token endpoint body is not JSON: %v", err)
	}
	return r
}

const formType = "application/x-www-form-urlencoded"

// TestTokenEndpoint covers A-05..A-10: each case is one request and the
// status and OAuth error it must get.
func TestTokenEndpoint(t *testing.T) {
	f := newFixture(t, "max-age=60")
	otherKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	cases := []struct {
		name   string
		body   func() (string, string) // content type, body
		status int
		err    string // OAuth error code; "" means success
		scope  string // granted scope on success
	}{
		{"A-05 ES384 client by JWKS value", func() (string, string) { return formType, f.form(f.sign(t, assertion{}), "system/*.read").Encode() }, 200, "", "system/*.read"},
		{"A-04 RS384 client by JWKS URL", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "rs"}), "system/*.rs").Encode()
		}, 200, "", "system/*.rs"},
		{"A-05 JSON body instead of a form", func() (string, string) {
			b, _ := json.Marshal(map[string]string{"grant_type": "client_credentials", "client_assertion_type": AssertionType, "client_assertion": f.sign(t, assertion{}), "scope": "system/*.read"})
			return "application/json", string(b)
		}, 400, "invalid_request", ""},
		{"A-05 missing client_assertion", func() (string, string) { return formType, f.form("", "system/*.read").Encode() }, 400, "invalid_request", ""},
		{"A-05 missing scope", func() (string, string) { return formType, f.form(f.sign(t, assertion{}), "-").Encode() }, 400, "invalid_request", ""},
		{"A-10 wrong grant type", func() (string, string) {
			v := f.form(f.sign(t, assertion{}), "system/*.read")
			v.Set("grant_type", "foo")
			return formType, v.Encode()
		}, 400, "unsupported_grant_type", ""},
		{"A-10 missing grant type", func() (string, string) {
			v := f.form(f.sign(t, assertion{}), "system/*.read")
			v.Del("grant_type")
			return formType, v.Encode()
		}, 400, "invalid_request", ""},
		{"A-10 bad client_assertion_type", func() (string, string) {
			v := f.form(f.sign(t, assertion{}), "system/*.read")
			v.Set("client_assertion_type", "urn:example:other")
			return formType, v.Encode()
		}, 401, "invalid_client", ""},
		{"A-06 not a JWT", func() (string, string) { return formType, f.form("not.a.jwt", "system/*.read").Encode() }, 401, "invalid_client", ""},
		{"A-06 bad signature", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{key: otherKey}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 iss differs from sub", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{sub: "rs"}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 unknown client", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "nobody"}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 wrong aud", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{aud: "https://elsewhere.example/token"}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 aud as a one-element array", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{aud: []string{f.tokenURL}}), "system/*.read").Encode()
		}, 200, "", "system/*.read"},
		{"A-06 exp one hour ahead", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{exp: time.Hour}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 expired", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{exp: -time.Minute}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 no exp", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{noExp: true}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-06 RS256 is not accepted", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "rs", alg: "RS256"}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-07 jku of the registered JWKS URL", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "rs", jku: f.jwksURL}), "system/*.rs").Encode()
		}, 200, "", "system/*.rs"},
		{"A-07 jku of another host", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "rs", jku: "https://attacker.example/jwks.json"}), "system/*.rs").Encode()
		}, 401, "invalid_client", ""},
		{"A-07 jku on a client registered by JWKS value", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{jku: f.jwksURL}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-07 unknown kid", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{kid: "nope"}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-07 kid of the wrong key type", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "rs", kid: "es-1"}), "system/*.rs").Encode()
		}, 401, "invalid_client", ""},
		{"A-07 two keys match the kid", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "twins", kid: "same"}), "system/*.read").Encode()
		}, 401, "invalid_client", ""},
		{"A-08 v2 scope for a v1 registration", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{}), "system/Observation.rs").Encode()
		}, 200, "", "system/Observation.rs"},
		{"A-08 wildcard narrowed to the registration", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "patients-only"}), "system/*.read").Encode()
		}, 200, "", "system/Patient.read"},
		{"A-08 type outside the registration", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{client: "patients-only"}), "system/Observation.read").Encode()
		}, 400, "invalid_scope", ""},
		{"A-08 unknown resource type", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{}), "system/Foo.read").Encode()
		}, 400, "invalid_scope", ""},
		{"A-08 write scope", func() (string, string) {
			return formType, f.form(f.sign(t, assertion{}), "system/*.write").Encode()
		}, 400, "invalid_scope", ""},
		{"A-08 empty scope", func() (string, string) { return formType, f.form(f.sign(t, assertion{}), "").Encode() }, 400, "invalid_scope", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := tc.body()
			r := f.post(t, ct, body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (body %v)", r.status, tc.status, r.body)
			}
			if got := r.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", got)
			}
			if tc.err != "" {
				if r.body["error"] != tc.err {
					t.Errorf("error %v, want %s", r.body["error"], tc.err)
				}
				if d, _ := r.body["error_description"].(string); d == "" {
					t.Error("no error_description")
				}
				if _, ok := r.body["access_token"]; ok {
					t.Error("an error response carries an access_token")
				}
				return
			}
			// A-09: the four fields, expires_in ≤ 300, no refresh token.
			if r.body["token_type"] != "bearer" {
				t.Errorf("token_type %v, want bearer", r.body["token_type"])
			}
			if n, _ := r.body["expires_in"].(float64); n <= 0 || n > 300 {
				t.Errorf("expires_in %v, want 1..300", r.body["expires_in"])
			}
			if r.body["scope"] != tc.scope {
				t.Errorf("scope %v, want %s", r.body["scope"], tc.scope)
			}
			if _, ok := r.body["refresh_token"]; ok {
				t.Error("a refresh_token was issued")
			}
			tok, _ := r.body["access_token"].(string)
			client, scopes, err := f.keys.Verify(tok, time.Now())
			if err != nil {
				t.Fatalf("the access token does not verify: %v", err)
			}
			if scopes.String() != tc.scope || client == "" {
				t.Errorf("token names client %q scope %q, want scope %q", client, scopes, tc.scope)
			}
		})
	}
}

// TestReplayedJTI: A-06, the same assertion twice; the second is refused.
func TestReplayedJTI(t *testing.T) {
	f := newFixture(t, "")
	body := f.form(f.sign(t, assertion{jti: "once"}), "system/*.read").Encode()
	if r := f.post(t, formType, body); r.status != 200 {
		t.Fatalf("first use: %d %v", r.status, r.body)
	}
	r := f.post(t, formType, body)
	if r.status != 401 || r.body["error"] != "invalid_client" {
		t.Fatalf("replay: %d %v, want 401 invalid_client", r.status, r.body)
	}
	// The same jti from another client is a different assertion.
	if r := f.post(t, formType, f.form(f.sign(t, assertion{client: "rs", jti: "once"}), "system/*.rs").Encode()); r.status != 200 {
		t.Fatalf("same jti, other client: %d %v", r.status, r.body)
	}
}

// TestJWKSCaching: A-07, a JWKS URL is fetched once within max-age and on
// every request when the key server forbids caching.
func TestJWKSCaching(t *testing.T) {
	for _, tc := range []struct {
		cacheControl string
		want         int32
	}{{"max-age=60", 1}, {"no-store", 3}, {"", 3}} {
		t.Run(tc.cacheControl, func(t *testing.T) {
			f := newFixture(t, tc.cacheControl)
			for range 3 {
				if r := f.post(t, formType, f.form(f.sign(t, assertion{client: "rs"}), "system/*.rs").Encode()); r.status != 200 {
					t.Fatalf("%d %v", r.status, r.body)
				}
			}
			if got := f.fetches.Load(); got != tc.want {
				t.Errorf("JWKS fetched %d times, want %d", got, tc.want)
			}
		})
	}
}

func TestCacheFor(t *testing.T) {
	for cc, want := range map[string]time.Duration{
		"max-age=60":            time.Minute,
		"public, max-age=120":   2 * time.Minute,
		"max-age=60, no-cache":  0,
		"no-store":              0,
		"":                      0,
		"max-age=abc":           0,
		"max-age=999999":        maxJWKSCache,
		`max-age="30", private`: 30 * time.Second,
	} {
		if got := cacheFor(cc); got != want {
			t.Errorf("cacheFor(%q) = %s, want %s", cc, got, want)
		}
	}
}

func TestTokenEndpointMethod(t *testing.T) {
	f := newFixture(t, "")
	resp, err := http.Get(f.tokenURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET token endpoint: %d, want 405", resp.StatusCode)
	}
}

// TestDiscovery: A-02 and A-03.
func TestDiscovery(t *testing.T) {
	f := newFixture(t, "")
	for _, accept := range []string{"*/*", "text/html", "application/fhir+json"} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/fhir"+DiscoveryPath, nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || err != nil {
			t.Fatalf("Accept %s: %d %s %v", accept, resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
		if doc["token_endpoint"] != f.tokenURL {
			t.Errorf("token_endpoint %v, want the absolute %s", doc["token_endpoint"], f.tokenURL)
		}
		has := func(field, v string) {
			t.Helper()
			list, _ := doc[field].([]any)
			for _, x := range list {
				if x == v {
					return
				}
			}
			t.Errorf("%s = %v lacks %s", field, doc[field], v)
		}
		has("grant_types_supported", "client_credentials")
		has("token_endpoint_auth_methods_supported", "private_key_jwt")
		has("token_endpoint_auth_signing_alg_values_supported", "RS384")
		has("token_endpoint_auth_signing_alg_values_supported", "ES384")
		has("scopes_supported", "system/*.read")
		has("capabilities", "client-confidential-asymmetric")
		has("capabilities", "permission-v1")
		has("capabilities", "permission-v2")
	}
}

// TestAccessTokens: tokens verify with the key that signed them only, and
// not after they expire.
func TestAccessTokens(t *testing.T) {
	k1, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	k2, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	keys1, _ := NewECKeys(k1)
	keys2, _ := NewECKeys(k2)
	hmac, err := NewHMACKeys([]byte(strings.Repeat("s", 48)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sc := Scopes{{Type: "Patient"}}
	for _, tc := range []struct {
		name   string
		signer *Keys
		check  *Keys
		at     time.Time
		ok     bool
	}{
		{"valid", keys1, keys1, now, true},
		{"valid HMAC", hmac, hmac, now, true},
		{"other key", keys1, keys2, now, false},
		{"HMAC token, EC verifier", hmac, keys1, now, false},
		{"expired", keys1, keys1, now.Add(TokenLifetime + time.Second), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := tc.signer.Sign("c1", sc, now, TokenLifetime)
			if err != nil {
				t.Fatal(err)
			}
			client, got, err := tc.check.Verify(tok, tc.at)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify error %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (client != "c1" || got.String() != "system/Patient.read") {
				t.Errorf("got %s %s", client, got)
			}
		})
	}
	if _, err := NewHMACKeys([]byte("short")); err == nil {
		t.Error("a 5-byte HMAC secret was accepted")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := t.TempDir() + "/token-key.pem"
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := k1.Sign("c", Scopes{{Type: "*"}}, time.Now(), time.Minute)
	if _, _, err := k2.Verify(tok, time.Now()); err != nil {
		t.Fatalf("the reloaded key does not verify the first one's tokens: %v", err)
	}
}

func ExampleDiscovery() {
	d := Discovery("https://bulk.example/fhir")
	fmt.Println(d["token_endpoint"])
	// Output: https://bulk.example/fhir/auth/token
}

// TestJWKSFetchTimeout: a key server that never answers costs the token
// request its timeout and an invalid_client, not a hang.
func TestJWKSFetchTimeout(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	f := newFixture(t, "")
	f.clients["rs"].JWKSURL = hang.URL + "/jwks.json"
	s := &Server{Clients: f.clients, Replay: &memReplay{}, Keys: f.keys, BasePath: "/fhir", Log: slog.New(slog.DiscardHandler),
		JWKS: &JWKSFetcher{HTTP: &http.Client{Timeout: 200 * time.Millisecond}}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	f.tokenURL = srv.URL + "/fhir" + TokenPath
	resp, err := http.Post(f.tokenURL, formType, strings.NewReader(f.form(f.sign(t, assertion{client: "rs"}), "system/*.rs").Encode()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 401 || body["error"] != "invalid_client" {
		t.Errorf("hanging JWKS URL: %d %v, want 401 invalid_client", resp.StatusCode, body)
	}
}

func TestJWKSURLSchemes(t *testing.T) {
	var fetcher JWKSFetcher
	for _, u := range []string{"http://keys.example/jwks.json", "ftp://keys.example/jwks.json", "file:///etc/passwd"} {
		if _, err := fetcher.Fetch(context.Background(), u, false); err == nil {
			t.Errorf("fetched %s", u)
		}
	}
}
