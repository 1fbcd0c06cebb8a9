package smartauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Issuer is the iss of the access tokens bulkfhir signs.
const Issuer = "bulkfhir"

// Keys sign and verify bulkfhir's access tokens. Locally the key is a
// P-384 EC key in the state directory (ES384); on AWS a random secret in
// Secrets Manager (HS384), shared by the token and API functions only.
type Keys struct {
	method jwt.SigningMethod
	sign   any
	verify any
}

// NewECKeys uses a P-384 private key (ES384).
func NewECKeys(k *ecdsa.PrivateKey) (*Keys, error) {
	if k.Curve != elliptic.P384() {
		return nil, errors.New("access token key: want a P-384 EC key")
	}
	return &Keys{method: jwt.SigningMethodES384, sign: k, verify: &k.PublicKey}, nil
}

// NewHMACKeys uses a shared secret of at least 32 bytes (HS384).
func NewHMACKeys(secret []byte) (*Keys, error) {
	if len(secret) < 32 {
		return nil, errors.New("access token secret: want at least 32 bytes")
	}
	return &Keys{method: jwt.SigningMethodHS384, sign: secret, verify: secret}, nil
}

// LoadOrCreateKey reads the PEM P-384 key at path, creating it (mode
// 0600) on first use.
func LoadOrCreateKey(path string) (*Keys, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		k, gerr := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if gerr != nil {
			return nil, fmt.Errorf("access token key: %w", gerr)
		}
		der, merr := x509.MarshalPKCS8PrivateKey(k)
		if merr != nil {
			return nil, fmt.Errorf("access token key: %w", merr)
		}
		raw = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("access token key: %w", err)
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, raw, 0o600); err != nil {
			return nil, fmt.Errorf("access token key: %w", err)
		}
		// Link, not rename: a second process starting at once keeps the
		// key the first one wrote.
		if err := os.Link(tmp, path); err != nil && !errors.Is(err, os.ErrExist) {
			os.Remove(tmp)
			return nil, fmt.Errorf("access token key: %w", err)
		}
		os.Remove(tmp)
		if raw, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("access token key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("access token key: %w", err)
	}
	k, err := jwt.ParseECPrivateKeyFromPEM(raw)
	if err != nil {
		return nil, fmt.Errorf("access token key %s: %w", path, err)
	}
	return NewECKeys(k)
}

// Claims are the claims of a bulkfhir access token.
type Claims struct {
	jwt.RegisteredClaims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
}

// Sign returns a signed access token for client with scope, valid for life.
func (k *Keys) Sign(client string, scope Scopes, now time.Time, life time.Duration) (string, error) {
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: client,
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(life)),
			ID: randomID(),
		},
		ClientID: client, Scope: scope.String(),
	}
	t := jwt.NewWithClaims(k.method, c)
	t.Header["typ"] = "at+jwt"
	s, err := t.SignedString(k.sign)
	if err != nil {
		return "", fmt.Errorf("sign access token: %w", err)
	}
	return s, nil
}

// Verify checks an access token's signature, issuer and expiry and returns
// its client and scopes.
func (k *Keys) Verify(token string, now time.Time) (string, Scopes, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return k.verify, nil },
		jwt.WithValidMethods([]string{k.method.Alg()}), jwt.WithIssuer(Issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(func() time.Time { return now }))
	if err != nil {
		return "", nil, fmt.Errorf("access token: %w", err)
	}
	if c.Subject == "" || c.ClientID != c.Subject {
		return "", nil, errors.New("access token: no client")
	}
	sc, err := ParseScopes(c.Scope)
	if err != nil {
		return "", nil, fmt.Errorf("access token: %w", err)
	}
	return c.Subject, sc, nil
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// Issued checks that token is an access token bulkfhir signed (signature
// and issuer), expired or not, and returns its client. API Gateway's
// authorizer uses it to turn away what bulkfhir never issued; the API
// itself checks expiry and scopes (Verify), so an expired token gets the
// API's 401 with an OperationOutcome.
func (k *Keys) Issued(token string) (string, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return k.verify, nil },
		jwt.WithValidMethods([]string{k.method.Alg()}), jwt.WithoutClaimsValidation())
	if err != nil {
		return "", fmt.Errorf("access token: %w", err)
	}
	if c.Issuer != Issuer || c.Subject == "" {
		return "", errors.New("access token: not issued by bulkfhir")
	}
	return c.Subject, nil
}
