package fhirsource

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/golang-jwt/jwt/v5"

	"github.com/bulkfhir/bulkfhir/shared/smartclient"
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
// credentials flow (smartclient, the implementation bulkfhir's export
// client uses too): a JWT assertion signed with the client's private key
// (RS384 for an RSA key, ES384 for a P-384 EC key) is exchanged at the
// token endpoint, and the token is reused until a minute before it expires.
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

	once sync.Once
	ts   *smartclient.TokenSource
}

// ParsePrivateKey reads a PEM RSA or EC private key (PKCS#1, PKCS#8 or
// SEC 1) for BackendServices.
func ParsePrivateKey(pem []byte) (crypto.Signer, error) { return smartclient.ParsePrivateKey(pem) }

func (b *BackendServices) method() (jwt.SigningMethod, error) {
	return smartclient.SigningMethod(b.Key)
}

func (b *BackendServices) source() *smartclient.TokenSource {
	b.once.Do(func() {
		b.ts = &smartclient.TokenSource{ClientID: b.ClientID, TokenURL: b.TokenURL, Key: b.Key,
			KeyID: b.KeyID, Scope: b.Scope, HTTP: b.HTTPClient}
	})
	return b.ts
}

// Authorize implements Authorizer.
func (b *BackendServices) Authorize(ctx context.Context, req *http.Request, body []byte) error {
	return b.source().Authorize(ctx, req, body)
}

// Invalidate implements Authorizer: the next request gets a new token.
func (b *BackendServices) Invalidate() { b.source().Invalidate() }

// Token returns a valid access token, requesting one when needed.
func (b *BackendServices) Token(ctx context.Context) (string, error) { return b.source().Token(ctx) }

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
