package smartauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/go-jose/go-jose/v4"
)

// ErrUnknownClient is a client id that is not registered.
var ErrUnknownClient = errors.New("unknown client")

// Client is a registered Backend Services client: its id, its public keys
// (a JWKS value or, preferred, a JWKS URL) and the scopes it may be granted.
type Client struct {
	ClientID string          `json:"clientId"`
	JWKS     json.RawMessage `json:"jwks,omitempty"`
	JWKSURL  string          `json:"jwksUrl,omitempty"`
	Scope    string          `json:"scope"`
}

// ClientStore looks up registered clients.
type ClientStore interface {
	// Client returns the client, or an error wrapping ErrUnknownClient.
	Client(ctx context.Context, id string) (*Client, error)
}

// Validate checks a registration: an id, exactly one of a JWKS value and a
// JWKS URL, every key in the value usable (kty and kid set, a bare RSA or
// P-384 EC public key), an https URL (http only for loopback), and a valid
// scope string.
func (c *Client) Validate() error {
	if strings.TrimSpace(c.ClientID) == "" || strings.ContainsAny(c.ClientID, " \t\r\n") {
		return errors.New("client: clientId is required and has no spaces")
	}
	hasJWKS := len(bytes.TrimSpace(c.JWKS)) > 0 && string(bytes.TrimSpace(c.JWKS)) != "null"
	if hasJWKS == (c.JWKSURL != "") {
		return fmt.Errorf("client %s: set exactly one of jwks and jwksUrl", c.ClientID)
	}
	if hasJWKS {
		set, err := parseJWKS(c.JWKS)
		if err != nil {
			return fmt.Errorf("client %s: %w", c.ClientID, err)
		}
		if len(set.Keys) == 0 {
			return fmt.Errorf("client %s: jwks has no usable keys", c.ClientID)
		}
	}
	if c.JWKSURL != "" {
		if err := checkJWKSURL(c.JWKSURL); err != nil {
			return fmt.Errorf("client %s: %w", c.ClientID, err)
		}
	}
	if _, err := ParseScopes(c.Scope); err != nil {
		return fmt.Errorf("client %s: scope: %w", c.ClientID, err)
	}
	return nil
}

// checkJWKSURL allows https anywhere and http only on the loopback
// interface (a key server on the same machine, as in tests).
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("jwksUrl %q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("jwksUrl %q: http is allowed only for loopback hosts; use https", raw)
	}
	return fmt.Errorf("jwksUrl %q: want an https URL", raw)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseJWKS reads a JWK Set, keeping the public keys a client may sign
// with (RSA, EC P-384) that carry a kid. Private key material is refused:
// a registration holds public keys only.
func parseJWKS(raw []byte) (*jose.JSONWebKeySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("jwks: not a JWK Set: %w", err)
	}
	set := &jose.JSONWebKeySet{}
	for i, k := range doc.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(k); err != nil {
			return nil, fmt.Errorf("jwks: key %d: %w", i, err)
		}
		if !jwk.IsPublic() {
			return nil, fmt.Errorf("jwks: key %d (kid %q) holds private key material; register the public key only", i, jwk.KeyID)
		}
		if jwk.KeyID == "" {
			continue // SMART requires a kid to select keys
		}
		set.Keys = append(set.Keys, jwk)
	}
	return set, nil
}

// StaticClients is a fixed registry, as read from a clients file.
type StaticClients map[string]*Client

// Client implements ClientStore.
func (s StaticClients) Client(_ context.Context, id string) (*Client, error) {
	if c, ok := s[id]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("client %q: %w", id, ErrUnknownClient)
}

// ClientsFile is the JSON of a clients file:
// {"clients":[{"clientId":"…","jwks":{…}|"jwksUrl":"…","scope":"system/*.read"}]}.
type ClientsFile struct {
	Clients []*Client `json:"clients"`
}

// LoadClientsFile reads and validates a clients file.
func LoadClientsFile(path string) (StaticClients, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("clients file: %w", err)
	}
	var f ClientsFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("clients file %s: %w", path, err)
	}
	out := StaticClients{}
	for _, c := range f.Clients {
		if c == nil {
			continue
		}
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("clients file %s: %w", path, err)
		}
		if _, dup := out[c.ClientID]; dup {
			return nil, fmt.Errorf("clients file %s: client %s is listed twice", path, c.ClientID)
		}
		out[c.ClientID] = c
	}
	return out, nil
}

// Clients looks a client up in each store in turn (a clients file, then
// the registered clients of a store).
type Clients []ClientStore

// Client implements ClientStore.
func (cs Clients) Client(ctx context.Context, id string) (*Client, error) {
	for _, s := range cs {
		c, err := s.Client(ctx, id)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, ErrUnknownClient) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("client %q: %w", id, ErrUnknownClient)
}
