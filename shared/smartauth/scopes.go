package smartauth

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// ErrInvalidScope is a scope that is malformed, names an unknown resource
// type, asks for more than reading, or is not granted to the client.
var ErrInvalidScope = errors.New("invalid scope")

// Scope is one parsed system scope that grants reading: system/T.read (v1)
// or system/T.rs (v2); Type is "*" for every type.
type Scope struct {
	Type string
	// V2 records the syntax, so a narrowed grant answers in the syntax the
	// client asked in.
	V2 bool
}

func (s Scope) String() string {
	if s.V2 {
		return "system/" + s.Type + ".rs"
	}
	return "system/" + s.Type + ".read"
}

// covers reports whether s grants at least what o asks for.
func (s Scope) covers(o Scope) bool { return s.Type == "*" || s.Type == o.Type }

// parseScope parses one scope. Only read access is offered: v1 .read, v2
// .rs (.r and .s alone do not cover a search-based export and are refused,
// as are write scopes, query-qualified v2 scopes, and other contexts).
func parseScope(s string) (Scope, error) {
	rest, ok := strings.CutPrefix(s, "system/")
	if !ok {
		return Scope{}, fmt.Errorf("%w: %q: only system/ scopes are offered to backend services", ErrInvalidScope, s)
	}
	if strings.ContainsAny(rest, "?&=") {
		return Scope{}, fmt.Errorf("%w: %q: scopes with search parameters are not supported", ErrInvalidScope, s)
	}
	typ, perm, ok := strings.Cut(rest, ".")
	if !ok || typ == "" {
		return Scope{}, fmt.Errorf("%w: %q: want system/Type.read or system/Type.rs", ErrInvalidScope, s)
	}
	if typ != "*" && !fhir.IsResourceType(typ) {
		return Scope{}, fmt.Errorf("%w: %q: %s is not a FHIR R4 resource type", ErrInvalidScope, s, typ)
	}
	switch perm {
	case "read":
		return Scope{Type: typ}, nil
	case "rs":
		return Scope{Type: typ, V2: true}, nil
	}
	return Scope{}, fmt.Errorf("%w: %q: this server grants read access only (system/%s.read or system/%s.rs)", ErrInvalidScope, s, typ, typ)
}

// Scopes is a set of granted read scopes.
type Scopes []Scope

// ParseScopes parses a space-separated scope string. Every scope must be
// valid; an empty string is an error.
func ParseScopes(s string) (Scopes, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, fmt.Errorf("%w: no scope requested (for example system/*.read)", ErrInvalidScope)
	}
	out := make(Scopes, 0, len(fields))
	for _, f := range fields {
		sc, err := parseScope(f)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// String is the space-separated scope string.
func (ss Scopes) String() string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// All reports whether the scopes cover every resource type.
func (ss Scopes) All() bool {
	return slices.ContainsFunc(ss, func(s Scope) bool { return s.Type == "*" })
}

// Allows reports whether the scopes let the holder read type t.
func (ss Scopes) Allows(t string) bool {
	return slices.ContainsFunc(ss, func(s Scope) bool { return s.covers(Scope{Type: t}) })
}

// Types lists the types named by the scopes, sorted (without "*").
func (ss Scopes) Types() []string {
	var out []string
	for _, s := range ss {
		if s.Type != "*" && !slices.Contains(out, s.Type) {
			out = append(out, s.Type)
		}
	}
	sort.Strings(out)
	return out
}

// Grant mediates a request: each requested scope is granted when the
// client's allowed scopes cover it; a wildcard request is narrowed to the
// specific types the client may read, in the syntax of the request. Asking
// for nothing grantable is ErrInvalidScope.
func Grant(requested, allowed Scopes) (Scopes, error) {
	var out Scopes
	add := func(s Scope) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, r := range requested {
		if slices.ContainsFunc(allowed, func(a Scope) bool { return a.covers(r) }) {
			add(r)
			continue
		}
		if r.Type == "*" {
			for _, a := range allowed {
				add(Scope{Type: a.Type, V2: r.V2})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q: this client is not registered for any of these scopes", ErrInvalidScope, requested.String())
	}
	return out, nil
}

// ReadScopes keeps the valid system read scopes of a token issued by an
// outside authorization server and ignores the rest (openid, launch, …),
// so such tokens are enforced like bulkfhir's own.
func ReadScopes(s string) Scopes {
	out := Scopes{}
	for _, f := range strings.Fields(s) {
		if sc, err := parseScope(f); err == nil && !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out
}
