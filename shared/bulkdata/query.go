package bulkdata

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// MaxQueryParams bounds the number of name=value pairs in one query string.
// No request of this server needs more; net/url's limit (10,000) fails
// silently by dropping them all.
const MaxQueryParams = 100

// QueryParam is one name=value pair of a query string, decoded, in the
// order it was sent.
type QueryParam struct {
	Name, Value string
}

// ParseQuery reads a raw query string (what follows '?', undecoded) into its
// pairs. Unlike url.ParseQuery it drops nothing: a pair it cannot decode, a
// ';' (which net/url used to treat as a separator), a pair without a name or
// more than MaxQueryParams pairs is a 400 naming the pair, so a request is
// never read wider than it was written. Empty pairs ("a=1&&b=2", a trailing
// '&') carry nothing and are skipped. Both the embedded server and the
// Lambda path read every query through it.
func ParseQuery(raw string) ([]QueryParam, *Error) {
	var out []QueryParam
	if raw == "" {
		return nil, nil
	}
	if n := strings.Count(raw, "&") + 1; n > MaxQueryParams*2 {
		// Refuse before splitting a huge string.
		return nil, queryError(fmt.Sprintf("query: more than %d parameters", MaxQueryParams))
	}
	for i, pair := range strings.Split(raw, "&") {
		if pair == "" {
			continue
		}
		if strings.Contains(pair, ";") {
			return nil, queryError(fmt.Sprintf("query: pair %d (%q) contains ';': separate parameters with '&' and percent-encode ';' as %%3B", i+1, clip(pair)))
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return nil, queryError(fmt.Sprintf("query: pair %d (%q): the name is not valid percent-encoding", i+1, clip(pair)))
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return nil, queryError(fmt.Sprintf("query: %s: the value is not valid percent-encoding", clip(name)))
		}
		if name == "" {
			return nil, queryError(fmt.Sprintf("query: pair %d (%q) has no parameter name", i+1, clip(pair)))
		}
		if len(out) == MaxQueryParams {
			return nil, queryError(fmt.Sprintf("query: more than %d parameters", MaxQueryParams))
		}
		out = append(out, QueryParam{Name: name, Value: value})
	}
	return out, nil
}

// QueryValues is ParseQuery into url.Values, for endpoints that take a few
// named parameters and have no order to keep.
func QueryValues(raw string) (url.Values, *Error) {
	params, err := ParseQuery(raw)
	if err != nil {
		return nil, err
	}
	v := url.Values{}
	for _, p := range params {
		v.Add(p.Name, p.Value)
	}
	return v, nil
}

func queryError(msg string) *Error {
	e := NewError(http.StatusBadRequest, fhir.CodeStructure, msg)
	e.Outcome.Issue[0].Expression = []string{"query"}
	return e
}

// clip shortens untrusted text quoted in a diagnostic.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
