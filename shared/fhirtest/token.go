package fhirtest

import (
	"crypto"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// TokenEndpoint is a strict SMART Backend Services token endpoint: it
// checks the client assertion's signature (RS384 or ES384 with PublicKey),
// iss = sub = ClientID, a jti, an expiry and aud = Audience, and issues
// bearer tokens. With RejectArrayAud it refuses an aud sent as a JSON array
// (even of one string), as Medplum does: the SMART specification makes
// aud the token URL, a string.
type TokenEndpoint struct {
	PublicKey      crypto.PublicKey
	ClientID       string
	Audience       string
	RejectArrayAud bool

	mu     sync.Mutex
	issued []string
}

// Issued lists the tokens issued so far.
func (e *TokenEndpoint) Issued() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.issued...)
}

// ServeHTTP implements http.Handler (POST, form-encoded).
func (e *TokenEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if r.Method != http.MethodPost || r.ParseForm() != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", "POST a form")
		return
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" || f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || f.Get("scope") == "" {
		tokenError(w, http.StatusBadRequest, "invalid_request", "grant_type, client_assertion_type and scope are required")
		return
	}
	assertion := f.Get("client_assertion")
	if e.RejectArrayAud {
		var raw struct {
			Aud json.RawMessage `json:"aud"`
		}
		tok, _, err := jwt.NewParser().ParseUnverified(assertion, jwt.MapClaims{})
		if err == nil {
			b, _ := json.Marshal(tok.Claims)
			_ = json.Unmarshal(b, &raw)
		}
		if len(raw.Aud) > 0 && raw.Aud[0] == '[' {
			tokenError(w, http.StatusBadRequest, "invalid_client", "aud must be a string, the token URL")
			return
		}
	}
	claims := jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(assertion, &claims, func(tok *jwt.Token) (any, error) {
		if a := tok.Method.Alg(); a != "RS384" && a != "ES384" {
			return nil, fmt.Errorf("alg %s is not RS384 or ES384", a)
		}
		return e.PublicKey, nil
	}, jwt.WithAudience(e.Audience), jwt.WithIssuer(e.ClientID), jwt.WithSubject(e.ClientID), jwt.WithExpirationRequired())
	if err != nil || claims.ID == "" {
		tokenError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("client assertion refused: %v", err))
		return
	}
	e.mu.Lock()
	tok := fmt.Sprintf("fhirtest-token-%d", len(e.issued)+1)
	e.issued = append(e.issued, tok)
	e.mu.Unlock()
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":300,"scope":%q}`, tok, f.Get("scope"))
}

func tokenError(w http.ResponseWriter, status int, code, desc string) {
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"error_description":%q}`, code, desc)
}
