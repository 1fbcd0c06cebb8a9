package fhirsource

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

// readPage returns a page's resource lines and next link.
func readPage(body string) (lines []string, next string, err error) {
	pg, err := newPage(strings.NewReader(body), func(n string) { next = n })
	if err != nil {
		return nil, "", err
	}
	for {
		line, err := pg.Next()
		if err == io.EOF {
			return lines, next, nil
		}
		if err != nil {
			return lines, next, err
		}
		lines = append(lines, string(line))
	}
}

func TestPageDecoding(t *testing.T) {
	cases := []struct {
		name, body string
		want       []string
		next       string
		err        string
	}{
		{"links first", `{"resourceType":"Bundle","link":[{"relation":"next","url":"p2"}],"entry":[{"resource":{"resourceType":"Patient","id":"a"}}]}`,
			[]string{`{"resourceType":"Patient","id":"a"}`}, "p2", ""},
		{"links last", `{"resourceType":"Bundle","entry":[{"resource":{"id":"a"}},{"resource":{"id":"b"}}],"link":[{"relation":"self","url":"s"},{"relation":"next","url":"p2"}]}`,
			[]string{`{"id":"a"}`, `{"id":"b"}`}, "p2", ""},
		{"pretty", "{\n  \"resourceType\" : \"Bundle\" ,\n  \"entry\" : [ {\n \"fullUrl\" : \"x\",\n \"resource\" : {\n  \"id\" : \"a\" ,\n  \"name\" : [ { \"text\" : \"A  B\\n\" } ] ,\n  \"n\" : 1.5e3 , \"t\" : true\n }\n } ]\n}\n",
			[]string{`{"id":"a","name":[{"text":"A  B\n"}],"n":1.5e3,"t":true}`}, "", ""},
		{"strings with structure", `{"entry":[{"resource":{"a":"} ] { [ , : \" \\","b":"x"}}]}`,
			[]string{`{"a":"} ] { [ , : \" \\","b":"x"}`}, "", ""},
		{"escaped key", `{"resourceType":"Bundle","\u0065ntry":[{"resource":{"id":"a"}}]}`,
			[]string{`{"id":"a"}`}, "", ""},
		{"entry without resource", `{"entry":[{"fullUrl":"x","search":{"mode":"outcome"}},{"resource":{"id":"a"}}]}`,
			[]string{``, `{"id":"a"}`}, "", ""},
		{"no entries", `{"resourceType":"Bundle","type":"searchset","total":0,"entry":[]}`, nil, "", ""},
		{"empty", `{}`, nil, "", ""},
		{"an OperationOutcome", `{"resourceType":"OperationOutcome","issue":[]}`, nil, "", "not a Bundle"},
		{"HTML", `<html>oops</html>`, nil, "", "HTML"},
		{"cut short", `{"resourceType":"Bundle","entry":[{"resource":{"id":"a"}},{"resource":{"id":`, []string{`{"id":"a"}`}, "", "cut short"},
		{"garbage after an entry", `{"entry":[{"resource":{"id":"a"}} x]}`, []string{`{"id":"a"}`}, "", "not valid JSON"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lines, next, err := readPage(tc.body)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") || next != tc.next {
				t.Fatalf("lines = %q next = %q, want %q %q", lines, next, tc.want, tc.next)
			}
		})
	}
	var se *SyntaxError
	if _, _, err := readPage(`{"entry":[{"resource":{"id":"a"}} x]}`); !errors.As(err, &se) {
		t.Fatalf("broken JSON is %T, want *SyntaxError (permanent)", err)
	}
	if _, _, err := readPage(`{"entry":[{"resource":{"id"`); errors.As(err, &se) {
		t.Fatal("a body cut short must not be a *SyntaxError (it is read again)")
	}
}

// FuzzPage checks the scanner never panics, and that for any valid Bundle
// JSON it returns exactly the compacted resources encoding/json sees.
func FuzzPage(f *testing.F) {
	f.Add(`{"resourceType":"Bundle","entry":[{"resource":{"id":"a","x":[1,2,{"y":null}]}}]}`)
	f.Add("{\"entry\" : [ { \"resource\" : { \"s\" : \"\\\"}\" } } ] , \"link\":[]}")
	f.Add(`{"entry":[{"resource":"str"},{"resource":12},{"resource":[1]}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		lines, _, err := readPage(body)
		// encoding/json matches struct fields case-insensitively; FHIR
		// JSON is case-sensitive, so decode into maps.
		var bundle map[string]json.RawMessage
		if json.Unmarshal([]byte(body), &bundle) != nil {
			return
		}
		if rt, ok := bundle["resourceType"]; ok && string(rt) != `"Bundle"` {
			return
		}
		if err != nil {
			return // e.g. duplicate keys: fine to refuse
		}
		var entries []map[string]json.RawMessage
		if e, ok := bundle["entry"]; ok && json.Unmarshal(e, &entries) != nil {
			return
		}
		var got []string
		for _, e := range entries {
			var c bytes.Buffer
			if r, ok := e["resource"]; ok {
				json.Compact(&c, r)
			}
			got = append(got, c.String())
		}
		if strings.Join(got, "\n") != strings.Join(lines, "\n") {
			t.Fatalf("scanner %q, encoding/json %q", lines, got)
		}
	})
}
