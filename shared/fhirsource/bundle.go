package fhirsource

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tidwall/gjson"
)

// page streams one searchset (or history) Bundle: the link array and the
// resources of its entries, each copied as raw JSON with the whitespace
// outside strings dropped, so a resource becomes one NDJSON line without
// being decoded. Memory holds one resource at a time.
//
// The scanner is hand-written because it is the hot path of an upstream
// export: encoding/json's Decoder (Token, then RawMessage, then Compact)
// reads the same bytes three times and allocates per token. It checks the
// Bundle's structure; each resource line is validated by the reader
// (fhir.Peek) before it is used.
type page struct {
	s *scanner
	// next is the Bundle's next link, known once the link array was read
	// (servers usually send it before the entries, so the next page can be
	// requested while this one is read).
	next     string
	linkSeen bool
	// onNext is called once, as soon as the next link is known.
	onNext    func(next string)
	inEntries bool
	done      bool
	line      bytes.Buffer
	tmp       bytes.Buffer
	// The last entry's request.method, request.url and
	// response.lastModified (history Bundles).
	method, reqURL, lastModified string
}

// SyntaxError is a page whose JSON is broken; retrying will not mend it.
type SyntaxError struct{ Err error }

func (e *SyntaxError) Error() string { return "upstream page is not valid JSON: " + e.Err.Error() }
func (e *SyntaxError) Unwrap() error { return e.Err }

func syntaxf(format string, args ...any) error {
	return &SyntaxError{Err: fmt.Errorf(format, args...)}
}

// errCutShort is a body that ended mid-Bundle: a transport problem, so the
// page is read again.
var errCutShort = fmt.Errorf("upstream page cut short: %w", io.ErrUnexpectedEOF)

func newPage(body io.Reader, onNext func(string)) (*page, error) {
	p := &page{s: &scanner{r: bufio.NewReaderSize(body, 64<<10)}, onNext: onNext}
	if err := p.s.expect('{'); err != nil {
		return nil, err
	}
	return p, nil
}

// Next returns the next entry's resource as one compact line (valid until
// the next call; empty for an entry without a resource), or io.EOF after
// the last entry.
func (p *page) Next() ([]byte, error) {
	for {
		if p.done {
			return nil, io.EOF
		}
		if p.inEntries {
			c, err := p.s.peek()
			if err != nil {
				return nil, err
			}
			switch c {
			case ']':
				p.s.r.Discard(1)
				p.inEntries = false
				if err := p.afterMember(); err != nil {
					return nil, err
				}
				continue
			case ',':
				p.s.r.Discard(1)
			}
			return p.entry()
		}
		if err := p.member(); err != nil {
			return nil, err
		}
	}
}

// afterMember reads the ',' or '}' after a Bundle member.
func (p *page) afterMember() error {
	c, err := p.s.peek()
	if err != nil {
		return err
	}
	p.s.r.Discard(1)
	switch c {
	case ',':
		return nil
	case '}':
		p.done = true
		p.linkDone()
		return nil
	}
	return syntaxf("unexpected %q after a Bundle member", c)
}

// member reads the Bundle's next member: link and entry are handled,
// resourceType checked, the rest skipped.
func (p *page) member() error {
	c, err := p.s.peek()
	if err != nil {
		return err
	}
	if c == '}' { // an empty Bundle object
		p.s.r.Discard(1)
		p.done = true
		p.linkDone()
		return nil
	}
	key, err := p.s.key()
	if err != nil {
		return err
	}
	switch key {
	case "entry":
		if err := p.s.expect('['); err != nil {
			return err
		}
		c, err := p.s.peek()
		if err != nil {
			return err
		}
		if c == ']' {
			p.s.r.Discard(1)
			return p.afterMember()
		}
		p.inEntries = true
		return nil
	case "link":
		p.tmp.Reset()
		if err := p.s.value(&p.tmp); err != nil {
			return err
		}
		var links []struct {
			Relation string `json:"relation"`
			URL      string `json:"url"`
		}
		if err := json.Unmarshal(p.tmp.Bytes(), &links); err != nil {
			return &SyntaxError{Err: err}
		}
		for _, l := range links {
			if l.Relation == "next" {
				p.next = l.URL
			}
		}
		p.linkDone()
	case "resourceType":
		p.tmp.Reset()
		if err := p.s.value(&p.tmp); err != nil {
			return err
		}
		if rt := p.tmp.String(); rt != `"Bundle"` {
			return syntaxf("%w (resourceType %s)", errNotBundle, rt)
		}
	default:
		if err := p.s.value(nil); err != nil {
			return err
		}
	}
	return p.afterMember()
}

// errNotBundle is a page that is not a Bundle (an OperationOutcome…).
var errNotBundle = errors.New("upstream page is not a Bundle")

func (p *page) linkDone() {
	if !p.linkSeen {
		p.linkSeen = true
		if p.onNext != nil && p.next != "" {
			p.onNext(p.next)
		}
	}
}

// entry reads one entry object and returns its resource.
func (p *page) entry() ([]byte, error) {
	if err := p.s.expect('{'); err != nil {
		return nil, err
	}
	p.method, p.reqURL, p.lastModified = "", "", ""
	p.line.Reset()
	hasResource := false
	for {
		c, err := p.s.peek()
		if err != nil {
			return nil, err
		}
		if c == '}' {
			p.s.r.Discard(1)
			break
		}
		if c == ',' {
			p.s.r.Discard(1)
		}
		key, err := p.s.key()
		if err != nil {
			return nil, err
		}
		switch key {
		case "resource":
			hasResource = true
			if err := p.s.value(&p.line); err != nil {
				return nil, err
			}
		case "request", "response":
			p.tmp.Reset()
			if err := p.s.value(&p.tmp); err != nil {
				return nil, err
			}
			if key == "request" {
				r := gjson.GetManyBytes(p.tmp.Bytes(), "method", "url")
				p.method, p.reqURL = r[0].Str, r[1].Str
			} else {
				p.lastModified = gjson.GetBytes(p.tmp.Bytes(), "lastModified").Str
			}
		default:
			if err := p.s.value(nil); err != nil {
				return nil, err
			}
		}
	}
	if !hasResource {
		return []byte{}, nil
	}
	return p.line.Bytes(), nil
}

// scanner reads JSON from a buffered reader without decoding it.
type scanner struct {
	r      *bufio.Reader
	keyBuf bytes.Buffer
}

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

func cutShort(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errCutShort
	}
	return err
}

// peek skips whitespace and returns the next byte without consuming it.
func (s *scanner) peek() (byte, error) {
	for {
		if _, err := s.r.Peek(1); err != nil {
			return 0, cutShort(err)
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		i := 0
		for i < len(buf) && isSpace(buf[i]) {
			i++
		}
		s.r.Discard(i)
		if i < len(buf) {
			return buf[i], nil
		}
	}
}

func (s *scanner) expect(c byte) error {
	got, err := s.peek()
	if err != nil {
		return err
	}
	if got != c {
		if c == '{' && got == '<' {
			return syntaxf("%w (HTML)", errNotBundle)
		}
		return syntaxf("want %q, got %q", c, got)
	}
	s.r.Discard(1)
	return nil
}

// key reads an object key and the colon after it.
func (s *scanner) key() (string, error) {
	c, err := s.peek()
	if err != nil {
		return "", err
	}
	if c != '"' {
		return "", syntaxf("want an object key, got %q", c)
	}
	s.keyBuf.Reset()
	if err := s.value(&s.keyBuf); err != nil {
		return "", err
	}
	if err := s.expect(':'); err != nil {
		return "", err
	}
	raw := s.keyBuf.Bytes()
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), nil
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return "", &SyntaxError{Err: err}
	}
	return k, nil
}

// value copies the next JSON value to dst (or skips it when dst is nil),
// dropping whitespace outside strings. It tracks strings, escapes and
// nesting; the bytes of numbers and literals are copied as they are.
func (s *scanner) value(dst *bytes.Buffer) error {
	if _, err := s.peek(); err != nil {
		return err
	}
	depth := 0
	inStr, esc, started := false, false, false
	for {
		if _, err := s.r.Peek(1); err != nil {
			return cutShort(err)
		}
		buf, _ := s.r.Peek(s.r.Buffered())
		start := 0
		for i := 0; i < len(buf); i++ {
			c := buf[i]
			if inStr {
				switch {
				case esc:
					esc = false
				case c == '\\':
					esc = true
				case c == '"':
					inStr = false
					if depth == 0 {
						return s.finish(dst, buf, start, i+1)
					}
				}
				continue
			}
			switch c {
			case '"':
				inStr = true
			case '{', '[':
				depth++
			case '}', ']':
				if depth == 0 {
					if !started {
						return syntaxf("unexpected %q", c)
					}
					return s.finish(dst, buf, start, i) // a scalar ended
				}
				depth--
				if depth == 0 {
					return s.finish(dst, buf, start, i+1)
				}
			case ',', ':':
				if depth == 0 {
					if !started {
						return syntaxf("unexpected %q", c)
					}
					return s.finish(dst, buf, start, i)
				}
			case ' ', '\n', '\r', '\t':
				if depth == 0 {
					return s.finish(dst, buf, start, i)
				}
				if dst != nil {
					dst.Write(buf[start:i])
				}
				start = i + 1
			}
			started = true
		}
		if dst != nil {
			dst.Write(buf[start:])
		}
		s.r.Discard(len(buf))
	}
}

func (s *scanner) finish(dst *bytes.Buffer, buf []byte, start, end int) error {
	if dst != nil {
		dst.Write(buf[start:end])
	}
	s.r.Discard(end)
	return nil
}
