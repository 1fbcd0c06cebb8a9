package api

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Caller is who a request comes from: the client that owns its jobs, and
// the resource types its token lets it read.
type Caller struct {
	Client string
	// Scopes are the token's granted scopes; nil means every type (no
	// scopes are in play: anonymous access or static tokens).
	Scopes smartauth.Scopes
}

// Allows reports whether the caller may read resources of type t.
func (c Caller) Allows(t string) bool { return c.Scopes == nil || c.Scopes.Allows(t) }

// Authenticator maps a request to its caller.
type Authenticator interface {
	// Authenticate returns the caller, or an error that becomes 401.
	Authenticate(r *http.Request) (Caller, error)
}

// Anonymous lets every request in as one client.
type Anonymous struct{}

// AnonymousClient is the owner of jobs when authentication is off.
const AnonymousClient = "anonymous"

// Authenticate implements Authenticator.
func (Anonymous) Authenticate(*http.Request) (Caller, error) {
	return Caller{Client: AnonymousClient}, nil
}

// errNoToken and errBadToken are the 401 reasons.
var (
	errNoToken      = errors.New("an Authorization: Bearer token is required")
	errBadToken     = errors.New("the bearer token is not valid")
	errQueryToken   = errors.New("access tokens are accepted only in the Authorization header, not in the query string (RFC 6750)")
	errExpiredToken = errors.New("the bearer token has expired or is not valid; get a new one from the token endpoint")
)

// BearerToken returns the RFC 6750 bearer token of r. A token in the query
// string (access_token) is refused, whatever the header says.
func BearerToken(r *http.Request) (string, error) {
	if r.URL.Query().Has("access_token") {
		return "", errQueryToken
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", errNoToken
	}
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", errBadToken
	}
	return tok, nil
}

// Tokens authenticates bulkfhir's own access tokens (smartauth), checking
// signature, issuer and expiry on every request without a store lookup.
type Tokens struct {
	Keys *smartauth.Keys
	Now  func() time.Time
}

// Authenticate implements Authenticator.
func (t Tokens) Authenticate(r *http.Request) (Caller, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return Caller{}, err
	}
	now := time.Now()
	if t.Now != nil {
		now = t.Now()
	}
	client, scopes, err := t.Keys.Verify(tok, now)
	if err != nil {
		return Caller{}, errExpiredToken
	}
	return Caller{Client: client, Scopes: scopes}, nil
}

// StaticTokens maps bearer tokens to client ids.
type StaticTokens struct {
	tokens map[string]string
}

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

// Authenticate implements Authenticator. Tokens are compared in constant
// time; static tokens carry no scopes, so they read every type.
func (t *StaticTokens) Authenticate(r *http.Request) (Caller, error) {
	tok, err := BearerToken(r)
	if err != nil {
		return Caller{}, err
	}
	client := ""
	for known, id := range t.tokens {
		if subtle.ConstantTimeCompare([]byte(known), []byte(tok)) == 1 {
			client = id
		}
	}
	if client == "" {
		return Caller{}, errBadToken
	}
	return Caller{Client: client}, nil
}
