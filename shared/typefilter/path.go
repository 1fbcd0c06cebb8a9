package typefilter

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/searchparam"
)

// The FHIRPath subset the R4 search parameter expressions use: paths from
// the resource root, unions (|), parentheses, .ofType(T), .as(T) and
// "as T", .where(resolve() is T) and .where(field = 'literal'). Anything
// else is refused when a filter is parsed, so a parameter is either
// evaluated exactly or not accepted.

// opKind is one step of a compiled path.
type opKind int

const (
	opField          opKind = iota // child element name (choice elements too)
	opOfType                       // keep nodes of a type
	opWhereType                    // where(resolve() is T): references to T
	opWhereEquals                  // where(field = 'literal')
	opExistsNotFalse               // the boolean "exists() and != false" of the nodes so far
)

type op struct {
	kind  opKind
	name  string // field name, type, or where field
	value string // where literal
}

// path is one union branch: steps from the resource root.
type path []op

// node is one value an expression selected: the JSON value, its element
// path from the resource root ("Observation.component.value"), and its FHIR
// type when known from a choice suffix or ofType ("Quantity").
type node struct {
	val  gjson.Result
	path string
	typ  string
}

// existsNotFalse is the one boolean form in the R4 definitions
// (Patient-deceased): "X.exists() and X != false".
var existsNotFalse = regexp.MustCompile(`^([A-Za-z.]+)\.exists\(\) and ([A-Za-z.]+) != false$`)

// compile parses expr, an expression of resource type typ, into branches.
func compile(typ, expr string) ([]path, error) {
	if m := existsNotFalse.FindStringSubmatch(expr); m != nil && m[1] == m[2] {
		branches, err := compile(typ, m[1])
		if err != nil || len(branches) != 1 {
			return nil, fmt.Errorf("unsupported FHIRPath %q", expr)
		}
		return []path{append(branches[0], op{kind: opExistsNotFalse})}, nil
	}
	p := &parser{typ: typ, toks: tokenize(expr)}
	if p.toks == nil {
		return nil, fmt.Errorf("unsupported FHIRPath %q", expr)
	}
	branches, err := p.union()
	if err != nil {
		return nil, fmt.Errorf("unsupported FHIRPath %q: %w", expr, err)
	}
	if p.i != len(p.toks) {
		return nil, fmt.Errorf("unsupported FHIRPath %q: unexpected %q", expr, p.toks[p.i])
	}
	return branches, nil
}

// tokenize splits expr into identifiers, quoted literals and punctuation;
// nil for a character outside the subset.
func tokenize(expr string) []string {
	var toks []string
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case strings.IndexByte(".()|=", c) >= 0:
			toks = append(toks, string(c))
			i++
		case c == '\'':
			j := strings.IndexByte(expr[i+1:], '\'')
			if j < 0 {
				return nil
			}
			toks = append(toks, expr[i:i+j+2])
			i += j + 2
		case isIdent(c):
			j := i
			for j < len(expr) && (isIdent(expr[j]) || (expr[j] >= '0' && expr[j] <= '9')) {
				j++
			}
			toks = append(toks, expr[i:j])
			i = j
		default:
			return nil
		}
	}
	return toks
}

func isIdent(c byte) bool { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

type parser struct {
	typ  string
	toks []string
	i    int
}

func (p *parser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *parser) next() string {
	t := p.peek()
	p.i++
	return t
}

func (p *parser) expect(t string) error {
	if got := p.next(); got != t {
		return fmt.Errorf("want %q, got %q", t, got)
	}
	return nil
}

// union := term ('|' term)*
func (p *parser) union() ([]path, error) {
	var out []path
	for {
		bs, err := p.term()
		if err != nil {
			return nil, err
		}
		out = append(out, bs...)
		if p.peek() != "|" {
			return out, nil
		}
		p.next()
	}
}

// term := primary ('.' step | 'as' Type)*
func (p *parser) term() ([]path, error) {
	var heads []path
	switch t := p.peek(); {
	case t == "(":
		p.next()
		inner, err := p.union()
		if err != nil {
			return nil, err
		}
		if err := p.expect(")"); err != nil {
			return nil, err
		}
		heads = inner
	case t == p.typ:
		p.next()
		heads = []path{{}}
	case t != "" && isIdent(t[0]) && t[0] >= 'a' && t[0] <= 'z':
		// A relative path (InsurancePlan's "name | alias").
		p.next()
		heads = []path{{{kind: opField, name: t}}}
	default:
		return nil, fmt.Errorf("unexpected %q", t)
	}
	var steps path
	for {
		switch p.peek() {
		case ".":
			p.next()
			s, err := p.step()
			if err != nil {
				return nil, err
			}
			steps = append(steps, s)
			continue
		case "as":
			p.next()
			t := p.next()
			if t == "" || !isIdent(t[0]) {
				return nil, fmt.Errorf("as: want a type")
			}
			steps = append(steps, op{kind: opOfType, name: t})
			continue
		}
		break
	}
	out := make([]path, len(heads))
	for i, h := range heads {
		out[i] = append(append(path{}, h...), steps...)
	}
	return out, nil
}

// step := ident | ofType(T) | as(T) | where(resolve() is T) | where(f = 'v')
func (p *parser) step() (op, error) {
	name := p.next()
	if name == "" || !isIdent(name[0]) {
		return op{}, fmt.Errorf("want an element name, got %q", name)
	}
	if p.peek() != "(" {
		return op{kind: opField, name: name}, nil
	}
	p.next()
	var o op
	switch name {
	case "ofType", "as":
		t := p.next()
		if t == "" || !isIdent(t[0]) {
			return op{}, fmt.Errorf("%s: want a type", name)
		}
		o = op{kind: opOfType, name: t}
	case "where":
		switch first := p.next(); {
		case first == "resolve":
			if err := p.expect("("); err != nil {
				return op{}, err
			}
			if err := p.expect(")"); err != nil {
				return op{}, err
			}
			if err := p.expect("is"); err != nil {
				return op{}, err
			}
			o = op{kind: opWhereType, name: p.next()}
		case first != "" && isIdent(first[0]):
			if err := p.expect("="); err != nil {
				return op{}, err
			}
			lit := p.next()
			if len(lit) < 2 || lit[0] != '\'' {
				return op{}, fmt.Errorf("where: want a string literal")
			}
			o = op{kind: opWhereEquals, name: first, value: lit[1 : len(lit)-1]}
		default:
			return op{}, fmt.Errorf("where: unsupported criteria %q", first)
		}
	default:
		return op{}, fmt.Errorf("function %s() is not supported", name)
	}
	if err := p.expect(")"); err != nil {
		return op{}, err
	}
	return o, nil
}

// eval returns the nodes the branches select in the resource root of type typ.
func eval(typ string, root gjson.Result, branches []path) []node {
	var out []node
	for _, b := range branches {
		nodes := []node{{val: root, path: typ}}
		for i := 0; i < len(b); i++ {
			o := b[i]
			if len(nodes) == 0 && o.kind != opExistsNotFalse {
				continue
			}
			switch o.kind {
			case opExistsNotFalse:
				nodes = []node{existsNotFalseNode(nodes)}
			case opField:
				// A choice element followed by ofType reads the one key.
				want := ""
				if i+1 < len(b) && b[i+1].kind == opOfType {
					want = b[i+1].name
				}
				nodes = children(nodes, o.name, want)
			case opOfType:
				nodes = keepType(nodes, o.name)
			case opWhereType:
				nodes = keepReferencesTo(nodes, o.name)
			case opWhereEquals:
				nodes = keepEquals(nodes, o.name, o.value)
			}
		}
		out = append(out, nodes...)
	}
	return out
}

// existsNotFalseNode is a boolean node: true when some node exists and is
// not the boolean false (a deceasedDateTime counts as deceased).
func existsNotFalseNode(nodes []node) node {
	for _, n := range nodes {
		if n.val.Type != gjson.False {
			return node{val: gjson.Result{Type: gjson.True, Raw: "true"}, typ: "boolean"}
		}
	}
	return node{val: gjson.Result{Type: gjson.False, Raw: "false"}, typ: "boolean"}
}

// children selects element name of each node, flattening arrays. A choice
// element name[x] is found under name+Type; want limits it to one type.
func children(nodes []node, name, want string) []node {
	var out []node
	for _, n := range nodes {
		if !n.val.IsObject() {
			continue
		}
		p := n.path + "." + name
		types := searchparam.ChoiceTypes(p)
		if types == nil && want != "" {
			// A choice element of a data type (UsageContext.value[x]).
			types = []string{want}
		}
		if types == nil {
			out = appendValues(out, n.val.Get(gjsonKey(name)), p, "")
			continue
		}
		if want != "" {
			if slices.Contains(types, want) {
				out = appendValues(out, n.val.Get(gjsonKey(name+upperFirst(want))), p, want)
			}
			continue
		}
		// One pass over the keys finds whichever name+Type is present.
		n.val.ForEach(func(k, v gjson.Result) bool {
			suffix, ok := strings.CutPrefix(k.Str, name)
			if !ok || suffix == "" || suffix[0] < 'A' || suffix[0] > 'Z' {
				return true
			}
			for _, t := range types {
				if upperFirst(t) == suffix {
					out = appendValues(out, v, p, t)
				}
			}
			return true
		})
	}
	return out
}

func appendValues(out []node, v gjson.Result, path, typ string) []node {
	switch {
	case !v.Exists() || v.Type == gjson.Null:
	case v.IsArray():
		v.ForEach(func(_, e gjson.Result) bool {
			if e.Type != gjson.Null {
				out = append(out, node{val: e, path: path, typ: typ})
			}
			return true
		})
	default:
		out = append(out, node{val: v, path: path, typ: typ})
	}
	return out
}

// gjsonKey escapes a JSON key for a gjson path (element names are plain
// identifiers, so this is only a safeguard).
func gjsonKey(k string) string {
	if strings.ContainsAny(k, ".*?|#@\\") {
		var b strings.Builder
		for _, r := range k {
			if strings.ContainsRune(".*?|#@\\", r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		return b.String()
	}
	return k
}

func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

// keepType keeps nodes of type t: those typed by their choice suffix, or
// untyped nodes (a non-choice element of that type).
func keepType(nodes []node, t string) []node {
	var out []node
	for _, n := range nodes {
		if n.typ == "" || n.typ == t {
			n.typ = t
			out = append(out, n)
		}
	}
	return out
}

// keepReferencesTo keeps the Reference nodes whose literal reference names
// resource type t ("T/id", or an absolute URL ending in T/id). Contained
// and logical references cannot be resolved and are dropped.
func keepReferencesTo(nodes []node, t string) []node {
	var out []node
	for _, n := range nodes {
		ref := n.val.Get("reference").Str
		if rt, _, ok := splitReference(ref); ok && rt == t {
			out = append(out, n)
		}
	}
	return out
}

// keepEquals keeps the nodes whose element field has the string value v.
func keepEquals(nodes []node, field, v string) []node {
	var out []node
	for _, n := range nodes {
		match := false
		for _, c := range appendValues(nil, n.val.Get(gjsonKey(field)), "", "") {
			if c.val.Type == gjson.String && c.val.Str == v {
				match = true
				break
			}
		}
		if match {
			out = append(out, n)
		}
	}
	return out
}

// splitReference returns the type and id of a literal reference: "T/id",
// "T/id/_history/v", or an absolute URL ending in one of those.
func splitReference(ref string) (typ, id string, ok bool) {
	if ref == "" || strings.HasPrefix(ref, "#") || strings.HasPrefix(ref, "urn:") {
		return "", "", false
	}
	parts := strings.Split(ref, "/")
	if n := len(parts); n >= 4 && parts[n-2] == "_history" {
		parts = parts[:n-2]
	}
	n := len(parts)
	if n < 2 || parts[n-1] == "" || parts[n-2] == "" || parts[n-2][0] < 'A' || parts[n-2][0] > 'Z' {
		return "", "", false
	}
	return parts[n-2], parts[n-1], true
}
