package bulkdata

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// checkResult asserts the parser's contract on any input: a request or a
// 4xx error with an OperationOutcome, never a panic or a 5xx.
func checkResult(t *testing.T, r *Request, err *Error) {
	if err != nil {
		if err.Status < 400 || err.Status > 499 {
			t.Fatalf("status %d, want 4xx", err.Status)
		}
		if len(err.Outcome.Issue) == 0 || err.Outcome.ResourceType != "OperationOutcome" {
			t.Fatalf("error without OperationOutcome issues: %+v", err)
		}
		return
	}
	if r == nil || r.OutputFormat != NDJSON {
		t.Fatalf("accepted request %+v", r)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"", "_type=Patient,Observation&_since=2020-01-01T00:00:00Z", "_outputFormat=ndjson",
		"_elements=Patient.id,name", "_typeFilter=Observation%3Fcode%3Da,Condition%3Fx%3Dy",
		"_since=2020-13-45", "patient=Patient/1", "_type=%00%ff", "includeAssociatedData=_x", "_type=Patient;", "a=1&&b", "=x", "_type=Patient&_type=",
		"_until=2021-01-01T00:00:00%2B01:00&_since=2020-01-01T00:00:00Z", "a=%zz",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, lenient bool) {
		params, qerr := ParseQuery(raw)
		if qerr != nil {
			checkResult(t, nil, qerr)
		}
		// Nothing is dropped: every '&'-separated non-empty pair is a
		// parameter, and each decodes as net/url would.
		if qerr == nil {
			n := 0
			for _, pair := range strings.Split(raw, "&") {
				if pair != "" {
					n++
				}
			}
			if n != len(params) {
				t.Fatalf("%q: %d pairs, %d parameters", raw, n, len(params))
			}
			if v, err := url.ParseQuery(raw); err == nil {
				got := url.Values{}
				for _, p := range params {
					got.Add(p.Name, p.Value)
				}
				if got.Encode() != v.Encode() {
					t.Fatalf("%q: got %v, net/url reads %v", raw, got, v)
				}
			}
		}
		for _, level := range []Level{LevelSystem, LevelPatient, LevelGroup} {
			r, perr := Parse(Kickoff{Method: http.MethodGet, Level: level, GroupID: "g", RawQuery: raw,
				Prefer: Preferences{RespondAsync: true, Lenient: lenient}, Now: now})
			checkResult(t, r, perr)
			if qerr != nil && perr == nil {
				t.Fatalf("%q: a malformed query was accepted", raw)
			}
		}
	})
}

func FuzzParseParameters(f *testing.F) {
	for _, s := range []string{
		`{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/1"}}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"_since","valueInstant":"2020-01-01T00:00:00Z"},{"name":"includeAssociatedData","valueCoding":{"code":"x"}}]}`,
		`{"resourceType":"Parameters","parameter":[{"name":"x","valueInteger":1e400}]}`,
		`{"resourceType":"Parameters","parameter":null}`, `[]`, `null`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, level := range []Level{LevelSystem, LevelPatient, LevelGroup} {
			r, perr := Parse(Kickoff{Method: http.MethodPost, Level: level, GroupID: "g", ContentType: "application/fhir+json",
				Body: body, Prefer: Preferences{RespondAsync: true}, Now: now})
			checkResult(t, r, perr)
		}
	})
}
