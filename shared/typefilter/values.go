package typefilter

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/tidwall/gjson"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/bulkfhir/bulkfhir/shared/searchparam"
)

// value is one comma-separated alternative of a search value.
type value interface {
	matchAny(c *cond, nodes []node) bool
}

func parseValue(typ, mod, s string) (value, error) {
	switch typ {
	case searchparam.Token:
		if mod == "text" {
			return textValue{s: fold(unescape(s))}, nil
		}
		return parseToken(s), nil
	case searchparam.Reference:
		return parseReference(mod, s)
	case searchparam.Date:
		return parseDateValue(s)
	case searchparam.String:
		return stringValue{raw: unescape(s), folded: fold(unescape(s))}, nil
	case searchparam.Number:
		return parseNumber(s)
	case searchparam.Quantity:
		return parseQuantity(s)
	case searchparam.URI:
		return uriValue{s: unescape(s)}, nil
	}
	return nil, fmt.Errorf("unsupported parameter type %s", typ)
}

// splitUnescaped splits s at sep not preceded by a backslash.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape removes the search escapes \, \| \$ \\.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// fold lower-cases s and removes accents, for string matching.
func fold(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	t := transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)
	out, _, err := transform.String(t, s)
	if err != nil {
		out = s
	}
	return strings.ToLower(out)
}

// --- token ---

type tokenValue struct {
	system, code string
	// hasSystem: a "|" was given; system "" then means "no system".
	hasSystem bool
}

func parseToken(s string) tokenValue {
	parts := splitUnescaped(s, '|')
	if len(parts) == 1 {
		return tokenValue{code: unescape(s)}
	}
	return tokenValue{system: unescape(parts[0]), code: unescape(strings.Join(parts[1:], "|")), hasSystem: true}
}

// tokenOf is one coded value of a node.
type tokenOf struct {
	system, code string
	// primitive: a code, string, uri, id or boolean, with no system.
	primitive bool
}

// tokens lists the coded values of a node: a primitive, a Coding, each
// Coding of a CodeableConcept, an Identifier or ContactPoint value.
func tokens(n node) []tokenOf {
	v := n.val
	switch v.Type {
	case gjson.String:
		return []tokenOf{{code: v.Str, primitive: true}}
	case gjson.True, gjson.False:
		return []tokenOf{{code: v.Raw, primitive: true}}
	case gjson.JSON:
	default:
		return nil
	}
	if !v.IsObject() {
		return nil
	}
	if codings := v.Get("coding"); codings.Exists() || n.typ == "CodeableConcept" {
		var out []tokenOf
		codings.ForEach(func(_, c gjson.Result) bool {
			out = append(out, tokenOf{system: c.Get("system").Str, code: c.Get("code").Str})
			return true
		})
		return out
	}
	if code := v.Get("code"); code.Exists() {
		return []tokenOf{{system: v.Get("system").Str, code: code.Str}}
	}
	if val := v.Get("value"); val.Type == gjson.String {
		return []tokenOf{{system: v.Get("system").Str, code: val.Str}}
	}
	return nil
}

func (t tokenValue) matchAny(_ *cond, nodes []node) bool {
	for _, n := range nodes {
		for _, tk := range tokens(n) {
			if tk.code == "" && t.code != "" {
				continue
			}
			switch {
			case !t.hasSystem:
				if tk.code == t.code {
					return true
				}
			case tk.primitive:
				// A primitive code has no system to compare: only
				// "|code" (no system) can match it.
				if t.system == "" && tk.code == t.code {
					return true
				}
			case t.code == "":
				if tk.system == t.system {
					return true
				}
			case tk.system == t.system && tk.code == t.code:
				return true
			}
		}
	}
	return false
}

// textValue is token:text: a string match on the text of a coded value.
type textValue struct{ s string }

func (t textValue) matchAny(_ *cond, nodes []node) bool {
	for _, n := range nodes {
		var texts []string
		v := n.val
		texts = append(texts, v.Get("text").Str, v.Get("display").Str, v.Get("type.text").Str)
		v.Get("coding").ForEach(func(_, c gjson.Result) bool {
			texts = append(texts, c.Get("display").Str)
			return true
		})
		for _, s := range texts {
			if s != "" && strings.HasPrefix(fold(s), t.s) {
				return true
			}
		}
	}
	return false
}

// --- string ---

type stringValue struct{ raw, folded string }

// strs lists the string parts of a node: a primitive, the parts of a
// HumanName or an Address.
func strs(n node) []string {
	v := n.val
	if v.Type == gjson.String {
		return []string{v.Str}
	}
	if !v.IsObject() {
		return nil
	}
	var out []string
	for _, k := range []string{"text", "family", "given", "prefix", "suffix", "line", "city", "district", "state", "postalCode", "country"} {
		for _, e := range appendValues(nil, v.Get(k), "", "") {
			if e.val.Type == gjson.String {
				out = append(out, e.val.Str)
			}
		}
	}
	return out
}

func (s stringValue) matchAny(c *cond, nodes []node) bool {
	for _, n := range nodes {
		for _, x := range strs(n) {
			switch c.modifier {
			case "exact":
				if x == s.raw {
					return true
				}
			case "contains":
				if strings.Contains(fold(x), s.folded) {
					return true
				}
			default:
				if strings.HasPrefix(fold(x), s.folded) {
					return true
				}
			}
		}
	}
	return false
}

// --- uri ---

type uriValue struct{ s string }

func (u uriValue) matchAny(c *cond, nodes []node) bool {
	for _, n := range nodes {
		if n.val.Type != gjson.String {
			continue
		}
		x := n.val.Str
		switch c.modifier {
		case "below":
			if strings.HasPrefix(x, u.s) {
				return true
			}
		case "above":
			if strings.HasPrefix(u.s, x) {
				return true
			}
		default:
			if x == u.s {
				return true
			}
		}
	}
	return false
}

// --- reference ---

type referenceValue struct {
	// typ and id of a relative "Type/id" or bare "id" (typ "" then, unless
	// a :Type modifier names it); abs is an absolute URL or canonical.
	typ, id, abs string
}

func parseReference(mod, s string) (value, error) {
	s = unescape(s)
	if s == "" {
		return nil, fmt.Errorf("empty reference")
	}
	if strings.Contains(s, "://") || strings.HasPrefix(s, "urn:") {
		return referenceValue{abs: s}, nil
	}
	typ, id, ok := strings.Cut(s, "/")
	if !ok {
		return referenceValue{typ: mod, id: s}, nil
	}
	if len(searchparam.ForType(typ)) == 0 || id == "" || strings.Contains(id, "/") {
		return nil, fmt.Errorf("want Type/id, id or an absolute URL")
	}
	if mod != "" && mod != typ {
		return nil, fmt.Errorf("the :%s modifier contradicts the type %s", mod, typ)
	}
	return referenceValue{typ: typ, id: id}, nil
}

func (r referenceValue) matchAny(c *cond, nodes []node) bool {
	for _, n := range nodes {
		var ref string
		switch {
		case n.val.Type == gjson.String:
			ref = n.val.Str // canonical or uri
		case n.val.IsObject():
			ref = n.val.Get("reference").Str
		}
		if ref == "" {
			continue
		}
		if r.abs != "" {
			canon, _, _ := strings.Cut(ref, "|")
			if ref == r.abs || canon == r.abs {
				return true
			}
			continue
		}
		if strings.Contains(ref, "://") {
			// An absolute reference may point at another server; only an
			// absolute search value matches it.
			continue
		}
		typ, id, ok := splitReference(ref)
		if !ok || id != r.id {
			continue
		}
		if r.typ == "" || r.typ == typ {
			return true
		}
	}
	return false
}

// --- prefixes ---

var prefixes = map[string]bool{"eq": true, "ne": true, "gt": true, "lt": true, "ge": true, "le": true, "sa": true, "eb": true, "ap": true}

func cutPrefix(s string) (string, string) {
	if len(s) > 2 && prefixes[s[:2]] {
		return s[:2], s[2:]
	}
	return "eq", s
}

// compareRanges applies a prefix to the target range [tlo, thi) against
// the search range [plo, phi), as R4 defines it for dates and numbers.
// approx is the half-width added to the search range for ap.
func compareRanges(prefix string, tlo, thi, plo, phi, approx float64) bool {
	contained := plo <= tlo && thi <= phi
	switch prefix {
	case "eq":
		return contained
	case "ne":
		return !contained
	case "gt":
		return thi > phi
	case "lt":
		return tlo < plo
	case "ge":
		return thi > phi || contained
	case "le":
		return tlo < plo || contained
	case "sa":
		return tlo >= phi
	case "eb":
		return thi <= plo
	case "ap":
		return tlo < phi+approx && thi > plo-approx
	}
	return false
}

// --- date ---

type dateValue struct {
	prefix string
	lo, hi float64 // Unix seconds, [lo, hi)
}

func parseDateValue(s string) (value, error) {
	prefix, rest := cutPrefix(s)
	lo, hi, ok := dateRange(rest)
	if !ok {
		return nil, fmt.Errorf("not a FHIR date, dateTime or instant")
	}
	return dateValue{prefix: prefix, lo: lo, hi: hi}, nil
}

// dateRange is the interval a date, dateTime or instant of any precision
// covers. Values without a time zone are read as UTC.
func dateRange(s string) (lo, hi float64, ok bool) {
	layouts := []struct {
		layout string
		step   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
	}
	for _, l := range layouts {
		if len(s) == len(l.layout) {
			t, err := time.Parse(l.layout, s)
			if err != nil {
				return 0, 0, false
			}
			return unix(t), unix(l.step(t)), true
		}
	}
	date, clock, found := strings.Cut(s, "T")
	if !found || len(date) != 10 {
		return 0, 0, false
	}
	zone := "Z"
	if strings.HasSuffix(clock, "Z") {
		clock = clock[:len(clock)-1]
	} else if i := strings.LastIndexAny(clock, "+-"); i > 0 {
		clock, zone = clock[:i], clock[i:]
	}
	var unit time.Duration
	switch {
	case len(clock) == 5: // hh:mm
		unit = time.Minute
		clock += ":00"
	case len(clock) == 8:
		unit = time.Second
	case len(clock) > 9 && clock[8] == '.':
		digits := len(clock) - 9
		if digits > 9 {
			return 0, 0, false
		}
		unit = time.Duration(math.Pow10(9 - digits))
	default:
		return 0, 0, false
	}
	t, err := time.Parse("2006-01-02T15:04:05.999999999Z07:00", date+"T"+clock+zone)
	if err != nil {
		return 0, 0, false
	}
	return unix(t), unix(t.Add(unit)), true
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// dateRanges lists the intervals of a node: a date/dateTime/instant, a
// Period (an open end is unbounded) or a Timing's events.
func dateRanges(n node) [][2]float64 {
	v := n.val
	if v.Type == gjson.String {
		if lo, hi, ok := dateRange(v.Str); ok {
			return [][2]float64{{lo, hi}}
		}
		return nil
	}
	if !v.IsObject() {
		return nil
	}
	start, end := v.Get("start"), v.Get("end")
	if start.Exists() || end.Exists() || n.typ == "Period" {
		lo, hi := math.Inf(-1), math.Inf(1)
		if start.Exists() {
			l, _, ok := dateRange(start.Str)
			if !ok {
				return nil
			}
			lo = l
		}
		if end.Exists() {
			_, h, ok := dateRange(end.Str)
			if !ok {
				return nil
			}
			hi = h
		}
		return [][2]float64{{lo, hi}}
	}
	var out [][2]float64
	v.Get("event").ForEach(func(_, e gjson.Result) bool {
		if lo, hi, ok := dateRange(e.Str); ok {
			out = append(out, [2]float64{lo, hi})
		}
		return true
	})
	return out
}

func (d dateValue) matchAny(_ *cond, nodes []node) bool {
	approx := 0.1 * math.Abs(unix(now())-d.lo)
	for _, n := range nodes {
		for _, r := range dateRanges(n) {
			if compareRanges(d.prefix, r[0], r[1], d.lo, d.hi, approx) {
				return true
			}
		}
	}
	return false
}

// --- number and quantity ---

type numberValue struct {
	prefix string
	n      float64
	lo, hi float64 // the range the value's precision implies
}

func parseNumber(s string) (numberValue, error) {
	prefix, rest := cutPrefix(s)
	n, err := strconv.ParseFloat(rest, 64)
	if err != nil || math.IsInf(n, 0) || math.IsNaN(n) {
		return numberValue{}, fmt.Errorf("not a number")
	}
	// 100 means [99.5, 100.5); 1.50 means [1.495, 1.505); 1e2 is exact
	// enough to use its own significant digits the same way.
	mant := strings.ToLower(rest)
	exp := 0
	if i := strings.IndexByte(mant, 'e'); i >= 0 {
		exp, _ = strconv.Atoi(mant[i+1:])
		mant = mant[:i]
	}
	decimals := 0
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		decimals = len(mant) - i - 1
	}
	half := 0.5 * math.Pow10(exp-decimals)
	return numberValue{prefix: prefix, n: n, lo: n - half, hi: n + half}, nil
}

func (v numberValue) matchNumber(x float64) bool {
	switch v.prefix {
	case "eq":
		return x >= v.lo && x < v.hi
	case "ne":
		return !(x >= v.lo && x < v.hi)
	case "gt", "sa":
		return x > v.n
	case "lt", "eb":
		return x < v.n
	case "ge":
		return x >= v.n
	case "le":
		return x <= v.n
	case "ap":
		d := math.Abs(v.n) * 0.1
		return x >= v.n-d && x <= v.n+d
	}
	return false
}

func (v numberValue) matchAny(_ *cond, nodes []node) bool {
	for _, n := range nodes {
		if n.val.Type == gjson.Number && v.matchNumber(n.val.Num) {
			return true
		}
	}
	return false
}

type quantityValue struct {
	number       numberValue
	system, code string
	hasUnit      bool
}

func parseQuantity(s string) (value, error) {
	parts := splitUnescaped(s, '|')
	num, err := parseNumber(parts[0])
	if err != nil {
		return nil, err
	}
	q := quantityValue{number: num}
	switch len(parts) {
	case 1:
	case 3:
		q.system, q.code, q.hasUnit = unescape(parts[1]), unescape(parts[2]), true
		if q.code == "" {
			return nil, fmt.Errorf("want number|system|code or number||code")
		}
	default:
		return nil, fmt.Errorf("want number|system|code or number||code")
	}
	return q, nil
}

func (q quantityValue) matchAny(_ *cond, nodes []node) bool {
	for _, n := range nodes {
		v := n.val
		if !v.IsObject() || n.typ == "SampledData" {
			continue
		}
		val := v.Get("value")
		if val.Type != gjson.Number || !q.number.matchNumber(val.Num) {
			continue
		}
		if !q.hasUnit {
			return true
		}
		// No unit conversion: the code (or, without a system, the unit)
		// must be the one asked for.
		if q.system != "" {
			if v.Get("system").Str == q.system && v.Get("code").Str == q.code {
				return true
			}
			continue
		}
		if v.Get("code").Str == q.code || v.Get("unit").Str == q.code {
			return true
		}
	}
	return false
}
