package fhirsource

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/golang-jwt/jwt/v5"
)

// StaticToken sends a fixed bearer token.
type StaticToken string

// Authorize implements Authorizer.
func (t StaticToken) Authorize(_ context.Context, req *http.Request, _ []byte) error {
	req.Header.Set("Authorization", "Bearer "+string(t))
	return nil
}

// Invalidate implements Authorizer (a static token cannot be refreshed).
func (StaticToken) Invalidate() {}

// BackendServices gets access tokens by the SMART Backend Services client
// credentials flow: a JWT assertion signed with the client's private key
// (RS384 for an RSA key, ES384 for a P-384 EC key) is exchanged at the token
// endpoint, and the token is reused until shortly before it expires.
type BackendServices struct {
	ClientID string
	TokenURL string
	Key      crypto.Signer
	// KeyID is the "kid" header: the key's id in the client's JWK Set.
	KeyID string
	// Scope defaults to "system/*.read".
	Scope string
	// HTTPClient posts to the token endpoint (default http.DefaultClient).
	HTTPClient *http.Client

	mu      sync.Mutex
	token   string
	expires time.Time
}

// ParsePrivateKey reads a PEM RSA or EC private key (PKCS#1, PKCS#8 or
// SEC 1) for BackendServices.
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

func (b *BackendServices) method() (jwt.SigningMethod, error) {
	switch k := b.Key.(type) {
	case *rsa.PrivateKey:
		return jwt.SigningMethodRS384, nil
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("ES384 needs a P-384 key")
		}
		return jwt.SigningMethodES384, nil
	}
	return nil, fmt.Errorf("unsupported key type %T (want RSA or P-384 EC)", b.Key)
}

// Authorize implements Authorizer.
func (b *BackendServices) Authorize(ctx context.Context, req *http.Request, _ []byte) error {
	tok, err := b.Token(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

// Invalidate implements Authorizer: the next request gets a new token.
func (b *BackendServices) Invalidate() {
	b.mu.Lock()
	b.token = ""
	b.mu.Unlock()
}

// Token returns a valid access token, requesting one when needed.
func (b *BackendServices) Token(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.token != "" && time.Now().Before(b.expires) {
		return b.token, nil
	}
	m, err := b.method()
	if err != nil {
		return "", err
	}
	now := time.Now()
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	t := jwt.NewWithClaims(m, jwt.RegisteredClaims{
		Issuer: b.ClientID, Subject: b.ClientID, Audience: jwt.ClaimStrings{b.TokenURL},
		ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)), ID: hex.EncodeToString(jti),
	})
	t.Header["typ"] = "JWT"
	if b.KeyID != "" {
		t.Header["kid"] = b.KeyID
	}
	assertion, err := t.SignedString(b.Key)
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	scope := b.Scope
	if scope == "" {
		scope = "system/*.read"
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"scope":                 {scope},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	hc := b.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token endpoint answered %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", fmt.Errorf("token endpoint sent no access_token")
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life <= 0 {
		life = 5 * time.Minute
	}
	// Renew a minute early (or at half-life for short tokens).
	b.token, b.expires = tr.AccessToken, now.Add(life-min(time.Minute, life/2))
	return b.token, nil
}

// SigV4 signs requests with AWS Signature Version 4, for AWS HealthLake
// (service "healthlake").
type SigV4 struct {
	Credentials aws.CredentialsProvider
	Region      string
	Service     string // default "healthlake"
	signer      *v4.Signer
	once        sync.Once
}

// Authorize implements Authorizer.
func (s *SigV4) Authorize(ctx context.Context, req *http.Request, body []byte) error {
	s.once.Do(func() { s.signer = v4.NewSigner() })
	creds, err := s.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("aws credentials: %w", err)
	}
	sum := sha256.Sum256(body)
	service := s.Service
	if service == "" {
		service = "healthlake"
	}
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", hash)
	return s.signer.SignHTTP(ctx, creds, req, hash, service, s.Region, time.Now())
}

// Invalidate implements Authorizer (credentials refresh themselves).
func (s *SigV4) Invalidate() {}
