package api

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// Authenticator maps a request to the client (owner) it comes from.
type Authenticator interface {
	// Authenticate returns the client id, or an error that becomes 401.
	Authenticate(r *http.Request) (string, error)
}

// Anonymous lets every request in as one client.
type Anonymous struct{}

// AnonymousClient is the owner of jobs when authentication is off.
const AnonymousClient = "anonymous"

// Authenticate implements Authenticator.
func (Anonymous) Authenticate(*http.Request) (string, error) { return AnonymousClient, nil }

// StaticTokens maps bearer tokens to client ids.
type StaticTokens struct {
	tokens map[string]string
}

// errNoToken and errBadToken are the two 401 reasons.
var (
	errNoToken  = errors.New("an Authorization: Bearer token is required")
	errBadToken = errors.New("the bearer token is not valid")
)

// LoadTokens reads a tokens file: one "TOKEN CLIENT_ID" pair per line;
// blank lines and lines starting with '#' are skipped.
func LoadTokens(path string) (*StaticTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	defer f.Close()
	t := &StaticTokens{tokens: map[string]string{}}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("tokens file %s line %d: want TOKEN CLIENT_ID", path, n)
		}
		t.tokens[fields[0]] = fields[1]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	if len(t.tokens) == 0 {
		return nil, fmt.Errorf("tokens file %s has no tokens", path)
	}
	return t, nil
}

// NewStaticTokens returns an authenticator for the token → client map.
func NewStaticTokens(tokens map[string]string) *StaticTokens {
	return &StaticTokens{tokens: tokens}
}

// Authenticate implements Authenticator. Tokens are compared in constant
// time; a token in the query string is not accepted (RFC 6750 header only).
func (t *StaticTokens) Authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", errNoToken
	}
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errBadToken
	}
	tok = strings.TrimSpace(tok)
	client := ""
	for known, id := range t.tokens {
		if subtle.ConstantTimeCompare([]byte(known), []byte(tok)) == 1 {
			client = id
		}
	}
	if client == "" {
		return "", errBadToken
	}
	return client, nil
}
