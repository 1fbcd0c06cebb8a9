package fhirsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tidwall/gjson"
)

// page streams one searchset Bundle: the link array and the resources of
// its entries, each copied as raw JSON and compacted to one line, without
// decoding the resources. Memory holds one resource at a time.
type page struct {
	dec *json.Decoder
	// next is the Bundle's next link, known once the link array was read
	// (servers usually send it before the entries, so the next page can be
	// requested while this one is read).
	next     string
	linkSeen bool
	// onNext is called once, as soon as the next link is known.
	onNext    func(next string)
	inEntries bool
	done      bool
	raw       json.RawMessage
	line      bytes.Buffer
	// The last entry's request.method, request.url and
	// response.lastModified (history Bundles).
	method, reqURL, lastModified string
}

// errNotBundle is a page that is not a Bundle (an OperationOutcome, HTML…).
var errNotBundle = errors.New("upstream page is not a Bundle")

// SyntaxError is a page whose JSON is broken; retrying will not mend it.
type SyntaxError struct{ Err error }

func (e *SyntaxError) Error() string { return "upstream page is not valid JSON: " + e.Err.Error() }
func (e *SyntaxError) Unwrap() error { return e.Err }

func newPage(body io.Reader, onNext func(string)) (*page, error) {
	p := &page{dec: json.NewDecoder(body), onNext: onNext}
	if err := p.delim('{'); err != nil {
		return nil, err
	}
	return p, nil
}

// classify turns decoder errors into a transport error (the body was cut
// short: retry) or a *SyntaxError (the server sent bad JSON).
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("upstream page cut short: %w", io.ErrUnexpectedEOF)
	}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	if errors.As(err, &se) || errors.As(err, &te) || errors.Is(err, errNotBundle) {
		return &SyntaxError{Err: err}
	}
	return err
}

func (p *page) delim(want json.Delim) error {
	tok, err := p.dec.Token()
	if err != nil {
		return classify(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return &SyntaxError{Err: fmt.Errorf("want %q, got %v", want, tok)}
	}
	return nil
}

// Next returns the next entry's resource as one compact line (valid until
// the next call), or io.EOF after the last entry.
func (p *page) Next() ([]byte, error) {
	for {
		if p.done {
			return nil, io.EOF
		}
		if p.inEntries {
			if p.dec.More() {
				return p.entry()
			}
			if err := p.delim(']'); err != nil {
				return nil, err
			}
			p.inEntries = false
			continue
		}
		if err := p.member(); err != nil {
			return nil, err
		}
	}
}

// member reads the Bundle's next member (or its end): link and entry are
// handled, resourceType checked, the rest skipped.
func (p *page) member() error {
	if !p.dec.More() {
		if err := p.delim('}'); err != nil {
			return err
		}
		p.done = true
		p.linkDone()
		return nil
	}
	tok, err := p.dec.Token()
	if err != nil {
		return classify(err)
	}
	key, _ := tok.(string)
	switch key {
	case "entry":
		if err := p.delim('['); err != nil {
			return err
		}
		p.inEntries = true
	case "link":
		var links []struct {
			Relation string `json:"relation"`
			URL      string `json:"url"`
		}
		if err := p.dec.Decode(&links); err != nil {
			return classify(err)
		}
		for _, l := range links {
			if l.Relation == "next" {
				p.next = l.URL
			}
		}
		p.linkDone()
	case "resourceType":
		var rt string
		if err := p.dec.Decode(&rt); err != nil {
			return classify(err)
		}
		if rt != "Bundle" {
			return &SyntaxError{Err: fmt.Errorf("%w (resourceType %q)", errNotBundle, rt)}
		}
	default:
		if err := p.dec.Decode(&p.raw); err != nil {
			return classify(err)
		}
	}
	return nil
}

func (p *page) linkDone() {
	if !p.linkSeen {
		p.linkSeen = true
		if p.onNext != nil && p.next != "" {
			p.onNext(p.next)
		}
	}
}

// entry reads one entry object and returns its resource ("" for an entry
// without one).
func (p *page) entry() ([]byte, error) {
	if err := p.delim('{'); err != nil {
		return nil, err
	}
	var res []byte
	p.method, p.reqURL, p.lastModified = "", "", ""
	for p.dec.More() {
		tok, err := p.dec.Token()
		if err != nil {
			return nil, classify(err)
		}
		p.raw = p.raw[:0]
		if err := p.dec.Decode(&p.raw); err != nil {
			return nil, classify(err)
		}
		switch tok {
		case "request":
			r := gjson.GetManyBytes(p.raw, "method", "url")
			p.method, p.reqURL = r[0].Str, r[1].Str
		case "response":
			p.lastModified = gjson.GetBytes(p.raw, "lastModified").Str
		}
		if tok == "resource" {
			p.line.Reset()
			if err := json.Compact(&p.line, p.raw); err != nil {
				return nil, &SyntaxError{Err: err}
			}
			res = p.line.Bytes()
		}
	}
	if err := p.delim('}'); err != nil {
		return nil, err
	}
	if res == nil {
		res = []byte{}
	}
	return res, nil
}
