package fhirsource

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// Settings name an upstream and how bulkfhir authenticates to it: no
// credentials, a static bearer token, SMART Backend Services (client id,
// private key, token URL) or AWS SigV4 (a region, for HealthLake). The CLI
// fills them from flags and the environment, the Lambda functions from
// environment variables and a Secrets Manager secret.
type Settings struct {
	URL string
	// Token is a static bearer token.
	Token string
	// SMART Backend Services.
	ClientID, TokenURL, Scope, KeyID string
	PrivateKeyPEM                    []byte
	// SigV4Region signs requests with the function's AWS credentials.
	SigV4Region string
}

// Secret is the JSON of the Secrets Manager secret that holds the upstream
// credentials: {"token": "…"} or {"clientId": "…", "privateKey": "PEM",
// "tokenUrl": "…", "scope": "…", "keyId": "…"}.
type Secret struct {
	Token      string `json:"token,omitempty"`
	ClientID   string `json:"clientId,omitempty"`
	PrivateKey string `json:"privateKey,omitempty"`
	TokenURL   string `json:"tokenUrl,omitempty"`
	Scope      string `json:"scope,omitempty"`
	KeyID      string `json:"keyId,omitempty"`
}

// ApplySecret fills the credentials a secret holds (values already set
// win, so the environment can override the secret's non-secret fields).
func (st *Settings) ApplySecret(raw []byte) error {
	var s Secret
	if err := json.Unmarshal(raw, &s); err != nil {
		return fmt.Errorf("upstream secret is not JSON of the documented shape: %w", err)
	}
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&st.Token, s.Token)
	set(&st.ClientID, s.ClientID)
	set(&st.TokenURL, s.TokenURL)
	set(&st.Scope, s.Scope)
	set(&st.KeyID, s.KeyID)
	if len(st.PrivateKeyPEM) == 0 && s.PrivateKey != "" {
		st.PrivateKeyPEM = []byte(s.PrivateKey)
	}
	return nil
}

// Authorizer returns the authentication the settings describe (nil for
// none). creds is needed for SigV4 only.
func (st Settings) Authorizer(creds aws.CredentialsProvider) (Authorizer, error) {
	smart := st.ClientID != "" || len(st.PrivateKeyPEM) > 0 || st.TokenURL != ""
	n := 0
	for _, on := range []bool{st.Token != "", smart, st.SigV4Region != ""} {
		if on {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("upstream: choose one authentication: a token, SMART Backend Services, or SigV4")
	}
	switch {
	case st.Token != "":
		return StaticToken(st.Token), nil
	case smart:
		var missing []string
		if st.ClientID == "" {
			missing = append(missing, "client id")
		}
		if len(st.PrivateKeyPEM) == 0 {
			missing = append(missing, "private key")
		}
		if st.TokenURL == "" {
			missing = append(missing, "token URL")
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("upstream SMART Backend Services needs: %s", strings.Join(missing, ", "))
		}
		key, err := ParsePrivateKey(st.PrivateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("upstream private key: %w", err)
		}
		b := &BackendServices{ClientID: st.ClientID, TokenURL: st.TokenURL, Key: key, KeyID: st.KeyID, Scope: st.Scope}
		if _, err := b.method(); err != nil {
			return nil, fmt.Errorf("upstream private key: %w", err)
		}
		return b, nil
	case st.SigV4Region != "":
		if creds == nil {
			return nil, errors.New("upstream SigV4 needs AWS credentials")
		}
		return &SigV4{Credentials: creds, Region: st.SigV4Region}, nil
	}
	return nil, nil
}
