// Package smartclient is the client side of SMART Backend Services, shared
// by bulkfhir's export client and its FHIR REST source: discover the token
// endpoint, sign a private_key_jwt assertion (RS384 for RSA keys, ES384 for
// P-384 EC keys; aud sent as a string, which every server accepts), trade
// it for an access token, reuse the token until a minute before it
// expires, and get a new one after Invalidate (a 401).
package smartclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// AssertionType is the client_assertion_type of private_key_jwt.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// DefaultScope is requested when none is set.
const DefaultScope = "system/*.read"

// TokenSource gets and caches access tokens for one client.
type TokenSource struct {
	ClientID string
	// TokenURL is the token endpoint; empty means discover it from
	// FHIRBase (.well-known/smart-configuration, then the
	// CapabilityStatement's oauth-uris extension).
	TokenURL string
	FHIRBase string
	Key      crypto.Signer
	// KeyID is the kid header; empty means the key's RFC 7638 thumbprint
	// (what `bulkfhir clients add` registers).
	KeyID string
	// Scope defaults to DefaultScope.
	Scope string
	// HTTP posts to the token endpoint (default http.DefaultClient).
	HTTP *http.Client
	Now  func() time.Time

	mu      sync.Mutex
	token   string
	renewAt time.Time
}

// ParsePrivateKey reads a PEM RSA or EC private key (PKCS#1, PKCS#8 or
// SEC 1).
func ParsePrivateKey(pem []byte) (crypto.Signer, error) {
	if k, err := jwt.ParseRSAPrivateKeyFromPEM(pem); err == nil {
		return k, nil
	}
	k, err := jwt.ParseECPrivateKeyFromPEM(pem)
	if err != nil {
		return nil, fmt.Errorf("not a PEM RSA or EC private key: %w", err)
	}
	return k, nil
}

// SigningMethod is the SMART algorithm for a key: RS384 or ES384.
func SigningMethod(k crypto.Signer) (jwt.SigningMethod, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return jwt.SigningMethodRS384, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P384() {
			return nil, errors.New("ES384 needs a P-384 key")
		}
		return jwt.SigningMethodES384, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want RSA or P-384 EC)", k)
}

// PublicJWK is the public JWK of a signing key, with its kid (the RFC 7638
// thumbprint unless kid is given) and alg.
func PublicJWK(k crypto.Signer, kid string) (jose.JSONWebKey, error) {
	m, err := SigningMethod(k)
	if err != nil {
		return jose.JSONWebKey{}, err
	}
	jwk := jose.JSONWebKey{Key: k.Public(), Algorithm: m.Alg(), Use: "sig", KeyID: kid}
	if kid == "" {
		tp, err := jwk.Thumbprint(crypto.SHA256)
		if err != nil {
			return jose.JSONWebKey{}, fmt.Errorf("key thumbprint: %w", err)
		}
		jwk.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	}
	return jwk, nil
}

func (t *TokenSource) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *TokenSource) client() *http.Client {
	if t.HTTP != nil {
		return t.HTTP
	}
	return http.DefaultClient
}

// Invalidate drops the cached token: the next Token call gets a new one.
func (t *TokenSource) Invalidate() {
	t.mu.Lock()
	t.token = ""
	t.mu.Unlock()
}

// Authorize sets the Authorization header of req (the fhirsource
// Authorizer contract).
func (t *TokenSource) Authorize(ctx context.Context, req *http.Request, _ []byte) error {
	tok, err := t.Token(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

// Token returns a valid access token, requesting one when there is none or
// the cached one is within a minute of expiry.
func (t *TokenSource) Token(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && t.now().Before(t.renewAt) {
		return t.token, nil
	}
	if t.TokenURL == "" {
		u, err := Discover(ctx, t.client(), t.FHIRBase)
		if err != nil {
			return "", err
		}
		t.TokenURL = u
	}
	assertion, err := t.assertion()
	if err != nil {
		return "", err
	}
	scope := t.Scope
	if scope == "" {
		scope = DefaultScope
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {scope},
		"client_assertion_type": {AssertionType},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	sent := t.now()
	resp, err := t.client().Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint %s answered %d: %s", t.TokenURL, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", errors.New("token endpoint sent no access_token")
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life <= 0 {
		life = 5 * time.Minute
	}
	// Renew a minute early (at half-life for tokens shorter than two).
	t.token, t.renewAt = tr.AccessToken, sent.Add(life-min(time.Minute, life/2))
	return t.token, nil
}

// assertion signs the client assertion: iss = sub = client id, aud = the
// token URL as a string, exp five minutes ahead, a random jti.
func (t *TokenSource) assertion() (string, error) {
	m, err := SigningMethod(t.Key)
	if err != nil {
		return "", err
	}
	kid := t.KeyID
	if kid == "" {
		jwk, err := PublicJWK(t.Key, "")
		if err != nil {
			return "", err
		}
		kid = jwk.KeyID
	}
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	claims := jwt.MapClaims{
		"iss": t.ClientID, "sub": t.ClientID, "aud": t.TokenURL,
		"exp": t.now().Add(5 * time.Minute).Unix(), "jti": hex.EncodeToString(jti),
	}
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["typ"] = "JWT"
	tok.Header["kid"] = kid
	s, err := tok.SignedString(t.Key)
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return s, nil
}

// Discover finds the token endpoint of a FHIR server: the token_endpoint
// of [base]/.well-known/smart-configuration, else the token URI of the
// CapabilityStatement's oauth-uris extension.
func Discover(ctx context.Context, hc *http.Client, base string) (string, error) {
	base = strings.TrimSuffix(base, "/")
	if base == "" {
		return "", errors.New("discover the token endpoint: no FHIR base URL")
	}
	var conf struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := getJSON(ctx, hc, base+"/.well-known/smart-configuration", &conf); err == nil && conf.TokenEndpoint != "" {
		return conf.TokenEndpoint, nil
	}
	var cs struct {
		Rest []struct {
			Security struct {
				Extension []struct {
					URL       string `json:"url"`
					Extension []struct {
						URL      string `json:"url"`
						ValueURI string `json:"valueUri"`
					} `json:"extension"`
				} `json:"extension"`
			} `json:"security"`
		} `json:"rest"`
	}
	if err := getJSON(ctx, hc, base+"/metadata", &cs); err != nil {
		return "", fmt.Errorf("discover the token endpoint of %s: %w", base, err)
	}
	for _, r := range cs.Rest {
		for _, e := range r.Security.Extension {
			if !strings.HasSuffix(e.URL, "/oauth-uris") {
				continue
			}
			for _, x := range e.Extension {
				if x.URL == "token" && x.ValueURI != "" {
					return x.ValueURI, nil
				}
			}
		}
	}
	return "", fmt.Errorf("discover the token endpoint of %s: the server advertises none", base)
}

func getJSON(ctx context.Context, hc *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", u, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}
