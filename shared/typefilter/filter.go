// Package typefilter evaluates _typeFilter queries ("Type?param=value&…")
// against single resources, with the R4 search semantics of each parameter
// type: token (system|code, :not, :text), reference (:Type), date (prefixes,
// partial precision, Periods), string (default, :exact, :contains),
// quantity, uri (:below, :above), number, and :missing on every type. A
// comma in a value is OR, a repeated parameter is AND, and several filters
// of one type (a Set) are OR.
//
// Parameters come from package searchparam (the R4 definitions); their
// FHIRPath expressions are evaluated over the raw JSON with gjson, reading
// only the elements a parameter needs. A parameter that cannot be evaluated
// exactly (composite, special, chained, _has, terminology modifiers, an
// expression outside the supported FHIRPath subset) is refused by Parse
// with a *ParamError naming it.
//
// Match takes one resource line, so any source can verify what it returns:
// the NDJSON sources filter with it while streaming, and a source that
// passes the filter upstream can check each resource it gets back.
package typefilter

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/searchparam"
)

// ParamError is a _typeFilter parameter that cannot be honoured.
type ParamError struct {
	// Param is the parameter as written, with its modifier ("code:in").
	Param  string
	Reason string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Reason }

// Filter is one _typeFilter query of one resource type: every condition
// must hold.
type Filter struct {
	typ   string
	conds []*cond
}

// Set is the filters of one type, OR-ed. An empty Set matches everything.
type Set []*Filter

// cond is one parameter occurrence: any of its values must match.
type cond struct {
	param    searchparam.Param
	branches []path
	modifier string // "", "not", "text", "exact", "contains", "below", "above", or a type for references
	missing  *bool
	values   []value
}

// Result parameters and others that are no search criteria.
var notCriteria = map[string]bool{
	"_include": true, "_revinclude": true, "_sort": true, "_elements": true, "_count": true,
	"_summary": true, "_total": true, "_contained": true, "_containedType": true, "_format": true,
	"_pretty": true,
}

// now is the reference point of the ap (approximately) prefix.
var now = time.Now

// Parse compiles query (the part after "Type?") for resource type typ. The
// error is a *ParamError for the first parameter that cannot be honoured.
func Parse(typ, query string) (*Filter, error) {
	f, problems := parse(typ, query)
	if len(problems) > 0 {
		return nil, problems[0]
	}
	return f, nil
}

// Check parses query and returns the query without the parameters that
// cannot be honoured, and one *ParamError per dropped parameter (for
// lenient handling, where they are dropped with a warning).
func Check(typ, query string) (kept string, problems []*ParamError) {
	_, problems = parse(typ, query)
	if len(problems) == 0 {
		return query, nil
	}
	bad := map[string]bool{}
	for _, p := range problems {
		bad[p.Param] = true
	}
	var parts []string
	for _, pair := range strings.Split(query, "&") {
		k, _, _ := strings.Cut(pair, "=")
		if name, err := url.PathUnescape(k); err == nil && !bad[name] {
			parts = append(parts, pair)
		}
	}
	return strings.Join(parts, "&"), problems
}

func parse(typ, query string) (*Filter, []*ParamError) {
	if len(searchparam.ForType(typ)) == 0 {
		return nil, []*ParamError{{Param: typ, Reason: "is not a FHIR R4 resource type"}}
	}
	f := &Filter{typ: typ}
	var problems []*ParamError
	for _, pair := range strings.Split(query, "&") {
		if pair == "" {
			continue
		}
		// A "+" stays a "+": the kick-off's own query decoding has already
		// run, and a time zone such as +01:00 must survive it.
		k, v, _ := strings.Cut(pair, "=")
		name, err1 := url.PathUnescape(k)
		val, err2 := url.PathUnescape(v)
		if err1 != nil || err2 != nil {
			problems = append(problems, &ParamError{Param: k, Reason: "is not URL-encoded correctly"})
			continue
		}
		c, perr := newCond(typ, name, val)
		if perr != nil {
			problems = append(problems, perr)
			continue
		}
		f.conds = append(f.conds, c)
	}
	if len(f.conds) == 0 && len(problems) == 0 {
		problems = append(problems, &ParamError{Param: typ, Reason: "the filter has no search parameters"})
	}
	return f, problems
}

// Compile parses the queries of one type into a Set.
func Compile(typ string, queries []string) (Set, error) {
	var s Set
	for _, q := range queries {
		f, err := Parse(typ, q)
		if err != nil {
			return nil, fmt.Errorf("_typeFilter %s?%s: %w", typ, q, err)
		}
		s = append(s, f)
	}
	return s, nil
}

// Match reports whether the resource matches every condition of f.
func (f *Filter) Match(resource []byte) bool {
	if len(resource) == 0 {
		return false
	}
	// The line is only read while Match runs and no result outlives it, so
	// it is viewed as a string without a copy (as gjson.GetBytes does).
	root := gjson.Parse(unsafe.String(&resource[0], len(resource)))
	if root.Get("resourceType").Str != f.typ {
		return false
	}
	for _, c := range f.conds {
		if !c.match(f.typ, root) {
			return false
		}
	}
	return true
}

// Match reports whether the resource matches any filter of s (true for an
// empty Set).
func (s Set) Match(resource []byte) bool {
	if len(s) == 0 {
		return true
	}
	for _, f := range s {
		if f.Match(resource) {
			return true
		}
	}
	return false
}

// Supported returns the search parameters of typ that _typeFilter can
// evaluate, sorted by code.
func Supported(typ string) []searchparam.Param {
	var out []searchparam.Param
	for _, p := range searchparam.ForType(typ) {
		if _, err := compileParam(typ, p); err == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Code < out[j].Code })
	return out
}

// Modifiers accepted per parameter type (besides :missing).
var modifiers = map[string]map[string]bool{
	searchparam.Token:     {"not": true, "text": true},
	searchparam.String:    {"exact": true, "contains": true},
	searchparam.URI:       {"below": true, "above": true},
	searchparam.Reference: {},
	searchparam.Date:      {},
	searchparam.Number:    {},
	searchparam.Quantity:  {},
}

func compileParam(typ string, p searchparam.Param) ([]path, error) {
	if _, ok := modifiers[p.Type]; !ok {
		return nil, fmt.Errorf("is a %s search parameter, which _typeFilter does not evaluate here", p.Type)
	}
	if p.Expression == "" {
		return nil, fmt.Errorf("has no FHIRPath expression in R4 for %s", typ)
	}
	return compile(typ, p.Expression)
}

func newCond(typ, name, raw string) (*cond, *ParamError) {
	fail := func(format string, a ...any) *ParamError {
		return &ParamError{Param: name, Reason: fmt.Sprintf(format, a...)}
	}
	code, mod, _ := strings.Cut(name, ":")
	switch {
	case notCriteria[code]:
		return nil, fail("is a result parameter, not allowed in a _typeFilter")
	case code == "_has" || strings.HasPrefix(code, "_has"):
		return nil, fail("reverse chaining (_has) is not supported in _typeFilter")
	case strings.Contains(code, "."):
		return nil, fail("chained parameters are not supported in _typeFilter")
	}
	p, ok := searchparam.Lookup(typ, code)
	if !ok {
		return nil, fail("is not a search parameter of %s in FHIR R4", typ)
	}
	branches, err := compileParam(typ, p)
	if err != nil {
		return nil, fail("%v", err)
	}
	c := &cond{param: p, branches: branches}
	if mod == "missing" {
		switch raw {
		case "true", "false":
			b := raw == "true"
			c.missing = &b
			return c, nil
		}
		return nil, fail("want true or false, got %q", raw)
	}
	if mod != "" {
		switch {
		case modifiers[p.Type][mod]:
		case p.Type == searchparam.Reference && len(searchparam.ForType(mod)) > 0:
			// A type modifier: subject:Patient=123.
		default:
			return nil, fail("the :%s modifier is not supported on %s parameters", mod, p.Type)
		}
	}
	c.modifier = mod
	for _, s := range splitUnescaped(raw, ',') {
		v, err := parseValue(p.Type, mod, s)
		if err != nil {
			return nil, fail("%q: %v", s, err)
		}
		c.values = append(c.values, v)
	}
	if len(c.values) == 0 {
		return nil, fail("has no value")
	}
	return c, nil
}

func (c *cond) match(typ string, root gjson.Result) bool {
	nodes := eval(typ, root, c.branches)
	if c.missing != nil {
		return (len(nodes) == 0) == *c.missing
	}
	found := false
	for _, v := range c.values {
		if v.matchAny(c, nodes) {
			found = true
			break
		}
	}
	if c.modifier == "not" {
		return !found
	}
	return found
}
