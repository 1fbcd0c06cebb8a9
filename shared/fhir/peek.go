package fhir

import (
	"encoding/binary"

	"github.com/tidwall/gjson"
)

// Head is what export filters need to know about a resource without decoding it.
type Head struct {
	ResourceType string
	ID           string
	LastUpdated  string // meta.lastUpdated as written, "" when absent
}

// Peek validates raw resource JSON and reads resourceType, id and
// meta.lastUpdated from it, in one pass over the bytes. ok is false when the
// bytes are not valid JSON, not an object, or have no string resourceType.
//
// It is the per-line work of every export, so it is a hand-written scanner:
// validating with gjson and then reading three fields walked each line
// twice. FuzzPeek checks it against encoding/json.
func Peek(resource []byte) (h Head, ok bool) {
	p := peeker{b: resource}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return h, false
	}
	var rt, id, lu span
	if !p.object(0, func(key span, depth int) bool {
		switch {
		case depth == 0 && rt.none() && p.keyIs(key, "resourceType"):
			rt = p.stringValue()
			return true
		case depth == 0 && id.none() && p.keyIs(key, "id"):
			id = p.stringValue()
			return true
		case depth == 0 && p.keyIs(key, "meta") && p.i < len(p.b) && p.b[p.i] == '{':
			return p.object(1, func(k span, _ int) bool {
				if lu.none() && p.keyIs(k, "lastUpdated") {
					lu = p.stringValue()
					return true
				}
				return p.value(2)
			})
		}
		return p.value(depth + 1)
	}) {
		return h, false
	}
	p.ws()
	if p.i != len(p.b) || rt.bad() || id.bad() || lu.bad() {
		return h, false
	}
	h.ResourceType = p.text(rt, "resourceType")
	if h.ResourceType == "" {
		return h, false
	}
	h.ID = p.text(id, "id")
	h.LastUpdated = p.text(lu, "meta.lastUpdated")
	return h, true
}

// maxDepth bounds nesting (real resources nest a few dozen levels).
const maxDepth = 1000

// span is a string value's bytes between its quotes; start < 0 when the
// field was absent or not a string, -2 when it was invalid.
type span struct {
	start, end int
	escaped    bool
}

func (s span) none() bool { return s.start == 0 && s.end == 0 }
func (s span) bad() bool  { return s.start == -2 }

type peeker struct {
	b []byte
	i int
}

// plain marks the bytes a string can hold without a closer look.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (p *peeker) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// str scans a string starting at its opening quote and returns its content.
func (p *peeker) str() (span, bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return span{}, false
	}
	p.i++
	s := span{start: p.i}
	for {
		// Eight bytes at a time while none is a quote, a backslash or a
		// control character (a false alarm only drops to the byte loop).
		for p.i+8 <= len(p.b) {
			w := binary.LittleEndian.Uint64(p.b[p.i:])
			if hasLess(w, 0x20) || hasZero(w^(ones*'"')) || hasZero(w^(ones*'\\')) {
				break
			}
			p.i += 8
		}
		for p.i < len(p.b) && plain[p.b[p.i]] {
			p.i++
		}
		if p.i >= len(p.b) {
			return s, false
		}
		switch c := p.b[p.i]; {
		case c == '"':
			s.end = p.i
			p.i++
			return s, true
		case c == '\\':
			s.escaped = true
			if p.i+1 >= len(p.b) {
				return s, false
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) {
					return s, false
				}
				for _, h := range p.b[p.i+2 : p.i+6] {
					if !isHex(h) {
						return s, false
					}
				}
				p.i += 6
			default:
				return s, false
			}
		default: // a control character
			return s, false
		}
	}
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// hasZero reports whether a byte of w is zero; hasLess whether a byte is
// below n (n ≤ 128). Bit Twiddling Hacks.
func hasZero(w uint64) bool           { return (w-ones)&^w&highs != 0 }
func hasLess(w uint64, n uint64) bool { return (w-ones*n)&^w&highs != 0 }

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func (p *peeker) keyIs(k span, name string) bool {
	return !k.escaped && string(p.b[k.start:k.end]) == name
}

// stringValue reads a member's value, keeping its span when it is a string.
func (p *peeker) stringValue() span {
	if p.i < len(p.b) && p.b[p.i] == '"' {
		s, ok := p.str()
		if !ok {
			return span{start: -2}
		}
		return s
	}
	if !p.value(1) {
		return span{start: -2}
	}
	return span{start: -1, end: -1}
}

// text is a string field's value (unescaped when needed, through gjson).
func (p *peeker) text(s span, path string) string {
	if s.start < 0 || s.none() {
		return ""
	}
	if s.escaped {
		return gjson.GetBytes(p.b, path).Str
	}
	return string(p.b[s.start:s.end])
}

// object scans an object starting at '{'; member is called with each key
// (the value not yet read, p.i at its first byte) and must consume the
// value.
func (p *peeker) object(depth int, member func(key span, depth int) bool) bool {
	if depth > maxDepth {
		return false
	}
	p.i++ // '{'
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return true
	}
	for {
		p.ws()
		k, ok := p.str()
		if !ok {
			return false
		}
		p.ws()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return false
		}
		p.i++
		p.ws()
		if !member(k, depth) {
			return false
		}
		p.ws()
		if p.i >= len(p.b) {
			return false
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return true
		default:
			return false
		}
	}
}

// value scans any JSON value.
func (p *peeker) value(depth int) bool {
	p.ws()
	if p.i >= len(p.b) || depth > maxDepth {
		return false
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth, func(_ span, d int) bool { return p.value(d + 1) })
	case c == '[':
		p.i++
		p.ws()
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return true
		}
		for {
			if !p.value(depth + 1) {
				return false
			}
			p.ws()
			if p.i >= len(p.b) {
				return false
			}
			switch p.b[p.i] {
			case ',':
				p.i++
			case ']':
				p.i++
				return true
			default:
				return false
			}
		}
	case c == '"':
		_, ok := p.str()
		return ok
	case c == 't':
		return p.lit("true")
	case c == 'f':
		return p.lit("false")
	case c == 'n':
		return p.lit("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return false
}

func (p *peeker) lit(s string) bool {
	if p.i+len(s) > len(p.b) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *peeker) number() bool {
	if p.b[p.i] == '-' {
		p.i++
	}
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}
