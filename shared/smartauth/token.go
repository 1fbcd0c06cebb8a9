package smartauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
)

// Paths under the FHIR base.
const (
	TokenPath     = "/auth/token"
	DiscoveryPath = "/.well-known/smart-configuration"
)

// AssertionType is the client_assertion_type of private_key_jwt.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// TokenLifetime is how long access tokens live (A-09: at most 300 s).
const TokenLifetime = 5 * time.Minute

// maxAssertionAhead is how far in the future an assertion's exp may be
// no more than five minutes), with a little leeway for clocks.
const (
	maxAssertionAhead = 5 * time.Minute
	clockLeeway       = 10 * time.Second
)

// ErrReplay is a jti already used by the same client within its lifetime.
var ErrReplay = errors.New("jti already used")

// ReplayCache remembers assertion ids until they expire.
type ReplayCache interface {
	// Claim records key until the time given; if key is already recorded
	// and not expired it returns an error wrapping ErrReplay. Concurrent
	// claims of one key: exactly one succeeds.
	Claim(ctx context.Context, key string, until time.Time) error
}

// Server is the token endpoint and the discovery document.
type Server struct {
	Clients ClientStore
	Replay  ReplayCache
	Keys    *Keys
	JWKS    *JWKSFetcher
	// BaseURL is the public FHIR base URL; empty means derive it from each
	// request (Host, X-Forwarded-Proto), as the API does.
	BaseURL string
	// BasePath is where the FHIR API is mounted ("/fhir").
	BasePath string
	Now      func() time.Time
	Log      *slog.Logger
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Base is the public FHIR base URL for r.
func (s *Server) Base(r *http.Request) string {
	if s.BaseURL != "" {
		return strings.TrimSuffix(s.BaseURL, "/")
	}
	return RequestBase(r, s.BasePath)
}

// RequestBase derives the FHIR base URL from a request's Host and
// X-Forwarded-Proto.
func RequestBase(r *http.Request, basePath string) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	if basePath == "" {
		basePath = "/fhir"
	}
	return scheme + "://" + r.Host + "/" + strings.Trim(basePath, "/")
}

// ServeHTTP serves TokenPath and DiscoveryPath below the base path.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	base := "/" + strings.Trim(s.BasePath, "/")
	if s.BasePath == "" {
		base = "/fhir"
	}
	switch strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, base), "/") {
	case TokenPath:
		s.token(w, r)
	case DiscoveryPath:
		s.discovery(w, r)
	default:
		oauthError(w, http.StatusNotFound, "invalid_request", "no such endpoint")
	}
}

// tokenError is an RFC 6749 §5.2 error.
type tokenError struct {
	status int
	code   string
	desc   string
}

func (e *tokenError) Error() string { return e.code + ": " + e.desc }

func invalidClient(format string, args ...any) *tokenError {
	return &tokenError{http.StatusUnauthorized, "invalid_client", fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_request", fmt.Sprintf(format, args...)}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="bulkfhir"`)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// TokenResponse is the token endpoint's success body.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "the token endpoint accepts POST only")
		return
	}
	resp, err := s.issue(r)
	if err != nil {
		var te *tokenError
		if !errors.As(err, &te) {
			s.log().ErrorContext(r.Context(), "token endpoint", "err", err)
			oauthError(w, http.StatusInternalServerError, "server_error", "the token could not be issued; try again")
			return
		}
		s.log().InfoContext(r.Context(), "token refused", "error", te.code, "reason", te.desc)
		oauthError(w, te.status, te.code, te.desc)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	_ = json.NewEncoder(w).Encode(resp)
}

// issue checks a token request (A-05..A-08) and signs the token.
func (s *Server) issue(r *http.Request) (*TokenResponse, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, invalidRequest("the form could not be read")
	}
	f := r.PostForm
	for _, name := range []string{"grant_type", "client_assertion_type", "client_assertion", "scope"} {
		if len(f[name]) > 1 {
			return nil, invalidRequest("%s is repeated", name)
		}
	}
	switch gt := f.Get("grant_type"); gt {
	case "":
		return nil, invalidRequest("grant_type is required (client_credentials)")
	case "client_credentials":
	default:
		return nil, &tokenError{http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q is not supported; use client_credentials", gt)}
	}
	switch f.Get("client_assertion_type") {
	case "":
		return nil, invalidRequest("client_assertion_type is required (%s)", AssertionType)
	case AssertionType:
	default:
		return nil, invalidClient("client_assertion_type must be %s", AssertionType)
	}
	assertion := f.Get("client_assertion")
	if assertion == "" {
		return nil, invalidRequest("client_assertion is required")
	}
	if _, ok := f["scope"]; !ok {
		return nil, invalidRequest("scope is required (for example system/*.read)")
	}
	requested, err := ParseScopes(f.Get("scope"))
	if err != nil {
		return nil, &tokenError{http.StatusBadRequest, "invalid_scope", err.Error()}
	}
	client, err := s.authenticateClient(r.Context(), assertion, s.Base(r)+TokenPath)
	if err != nil {
		return nil, err
	}
	allowed, err := ParseScopes(client.Scope)
	if err != nil {
		return nil, fmt.Errorf("client %s has a bad registered scope: %w", client.ClientID, err)
	}
	granted, err := Grant(requested, allowed)
	if err != nil {
		return nil, &tokenError{http.StatusBadRequest, "invalid_scope", err.Error()}
	}
	tok, err := s.Keys.Sign(client.ClientID, granted, s.now(), TokenLifetime)
	if err != nil {
		return nil, err
	}
	s.log().InfoContext(r.Context(), "token issued", "client", client.ClientID, "scope", granted.String())
	return &TokenResponse{AccessToken: tok, TokenType: "bearer", ExpiresIn: int(TokenLifetime / time.Second), Scope: granted.String()}, nil
}

// authenticateClient verifies a private_key_jwt assertion and
// returns the client it authenticates.
func (s *Server) authenticateClient(ctx context.Context, assertion, tokenURL string) (*Client, error) {
	var claims jwt.RegisteredClaims
	parser := jwt.NewParser()
	unverified, _, err := parser.ParseUnverified(assertion, &claims)
	if err != nil {
		return nil, invalidClient("client_assertion is not a JWT")
	}
	alg, _ := unverified.Header["alg"].(string)
	if alg != "RS384" && alg != "ES384" {
		return nil, invalidClient("client_assertion alg %q is not supported; use RS384 or ES384", alg)
	}
	kid, _ := unverified.Header["kid"].(string)
	if kid == "" {
		return nil, invalidClient("client_assertion has no kid header")
	}
	if claims.Issuer == "" || claims.Issuer != claims.Subject {
		return nil, invalidClient("client_assertion iss and sub must both be the client_id")
	}
	client, err := s.Clients.Client(ctx, claims.Issuer)
	if errors.Is(err, ErrUnknownClient) {
		return nil, invalidClient("client_id %q is not registered", claims.Issuer)
	}
	if err != nil {
		return nil, fmt.Errorf("look up client: %w", err)
	}
	if len(claims.Audience) != 1 || claims.Audience[0] != tokenURL {
		return nil, invalidClient("client_assertion aud must be the token URL %s", tokenURL)
	}
	now := s.now()
	if claims.ExpiresAt == nil {
		return nil, invalidClient("client_assertion has no exp")
	}
	exp := claims.ExpiresAt.Time
	if !now.Before(exp.Add(clockLeeway)) {
		return nil, invalidClient("client_assertion has expired")
	}
	if exp.After(now.Add(maxAssertionAhead + clockLeeway)) {
		return nil, invalidClient("client_assertion exp is more than five minutes ahead")
	}
	if claims.ID == "" {
		return nil, invalidClient("client_assertion has no jti")
	}
	jku, hasJKU := unverified.Header["jku"]
	if hasJKU {
		if u, _ := jku.(string); client.JWKSURL == "" || u != client.JWKSURL {
			return nil, invalidClient("client_assertion jku does not match the client's registered JWKS URL")
		}
	}
	key, err := s.selectKey(ctx, client, kid, alg)
	if err != nil {
		return nil, err
	}
	if _, err := jwt.NewParser(jwt.WithValidMethods([]string{alg}), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(clockLeeway)).ParseWithClaims(assertion, &jwt.RegisteredClaims{}, func(*jwt.Token) (any, error) { return key, nil }); err != nil {
		return nil, invalidClient("client_assertion signature or claims do not verify: %v", errors.Unwrap(err))
	}
	// Recorded after the signature checks, so nobody but the client can
	// use up its jti values.
	err = s.Replay.Claim(ctx, claims.Issuer+"\x00"+claims.ID, exp.Add(clockLeeway))
	if errors.Is(err, ErrReplay) {
		return nil, invalidClient("client_assertion jti has been used before")
	}
	if err != nil {
		return nil, fmt.Errorf("replay cache: %w", err)
	}
	return client, nil
}

// selectKey finds exactly one key with kid whose type fits alg. A
// JWKS URL is fetched again once when no key matches, for key rotation.
func (s *Server) selectKey(ctx context.Context, c *Client, kid, alg string) (any, error) {
	find := func(set *jose.JSONWebKeySet) []any {
		var out []any
		for _, k := range set.Keys {
			if k.KeyID != kid {
				continue
			}
			switch pub := k.Key.(type) {
			case *rsa.PublicKey:
				if alg == "RS384" {
					out = append(out, pub)
				}
			case *ecdsa.PublicKey:
				if alg == "ES384" && pub.Curve == elliptic.P384() {
					out = append(out, pub)
				}
			}
		}
		return out
	}
	var keys []any
	if c.JWKSURL != "" {
		if s.JWKS == nil {
			s.JWKS = &JWKSFetcher{}
		}
		for _, fresh := range []bool{false, true} {
			set, err := s.JWKS.Fetch(ctx, c.JWKSURL, fresh)
			if err != nil {
				return nil, invalidClient("the client's JWKS URL could not be read: %v", err)
			}
			if keys = find(set); len(keys) > 0 {
				break
			}
		}
	} else {
		set, err := parseJWKS(c.JWKS)
		if err != nil {
			return nil, fmt.Errorf("client %s: registered jwks: %w", c.ClientID, err)
		}
		keys = find(set)
	}
	switch len(keys) {
	case 0:
		return nil, invalidClient("no registered key has kid %q and fits %s", kid, alg)
	case 1:
		return keys[0], nil
	}
	return nil, invalidClient("more than one registered key has kid %q and fits %s", kid, alg)
}

// Discovery is the .well-known/smart-configuration document.
func Discovery(base string) map[string]any {
	return map[string]any{
		"token_endpoint":                                   base + TokenPath,
		"grant_types_supported":                            []string{"client_credentials"},
		"token_endpoint_auth_methods_supported":            []string{"private_key_jwt"},
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS384", "ES384"},
		"scopes_supported":                                 []string{"system/*.read", "system/*.rs"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"capabilities":                                     []string{"client-confidential-asymmetric", "permission-v1", "permission-v2"},
	}
}

func (s *Server) discovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		oauthError(w, http.StatusMethodNotAllowed, "invalid_request", "GET only")
		return
	}
	body, _ := json.Marshal(Discovery(s.Base(r)))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(body)
}
