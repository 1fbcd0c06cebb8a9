package fhir

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

var benchResource = []byte(`{"resourceType":"Observation","id":"0b5b3e1c-6b0e-4a54-9a73-2f3c8b0e9d11","meta":{"lastUpdated":"2025-03-01T10:00:00.000Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},"subject":{"reference":"Patient/5f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"},"encounter":{"reference":"Encounter/1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"},"effectiveDateTime":"2025-03-01T10:00:00Z","issued":"2025-03-01T10:00:00Z","performer":[{"reference":"Practitioner/9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"}],"valueQuantity":{"value":72.5,"unit":"beats/min","system":"http://unitsofmeasure.org","code":"/min"}}`)

// BenchmarkPeek is the per-line cost the NDJSON source pays for every
// resource: validation and the three fields the filters need.
func BenchmarkPeek(b *testing.B) {
	b.SetBytes(int64(len(benchResource)))
	for i := 0; i < b.N; i++ {
		if _, ok := Peek(benchResource); !ok {
			b.Fatal("not a resource")
		}
	}
}

// BenchmarkSubset is the per-line cost of _elements.
func BenchmarkSubset(b *testing.B) {
	sel := NewElementSelector([][2]string{{"", "status"}, {"", "subject"}})
	b.SetBytes(int64(len(benchResource)))
	for i := 0; i < b.N; i++ {
		if _, err := sel.Subset("Observation", benchResource); err != nil {
			b.Fatal(err)
		}
	}
}

// firstMember returns the raw value of the first member named key of the
// JSON object in, as Peek reads it (encoding/json would keep the last).
func firstMember(in []byte, key string) (json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(in))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if k == key {
			return v, true
		}
	}
	return nil, false
}

func stringMember(in []byte, key string) string {
	raw, ok := firstMember(in, key)
	var s string
	if !ok || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// FuzzPeek checks Peek against encoding/json: it accepts exactly the valid
// JSON objects with a non-empty string resourceType, and reads the same
// three fields.
func FuzzPeek(f *testing.F) {
	f.Add(string(benchResource))
	f.Add(`{"resourceType":"Patient","id":"a\u0062c","meta":{"lastUpdated":"2020-01-01T00:00:00Z","x":[1,2.5e-3,true,null]}}`)
	f.Add(`{"id":"x","resourceType":"Patient","meta":"not an object"}`)
	f.Add(`{"resourceType":"Patient","resourceType":"Observation"}`)
	f.Add(` {"resourceType" : "A" , "n":-0.0E+1 } `)
	f.Add("{\"resourceType\":\"A\",\"s\":\"\x01\"}")
	f.Add(`{"resourceType":"A"}x`)
	f.Add(`{"resourceType":"","id":7}`)
	f.Add(`{"resourceType":"A","meta":{"lastUpdated":"x\"y"}}`)
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		h, ok := Peek(b)
		valid := json.Valid(b) && len(bytes.TrimSpace(b)) > 0 && bytes.TrimSpace(b)[0] == '{'
		rt := ""
		if valid {
			rt = stringMember(b, "resourceType")
		}
		if want := valid && rt != ""; ok != want {
			t.Fatalf("Peek ok = %v, want %v for %q", ok, want, s)
		}
		if !ok || !utf8.Valid(b) {
			return // encoding/json would decode invalid UTF-8 as U+FFFD
		}
		lu := ""
		if meta, found := firstMember(b, "meta"); found && bytes.HasPrefix(meta, []byte("{")) {
			lu = stringMember(meta, "lastUpdated")
		}
		if h.ResourceType != rt || h.ID != stringMember(b, "id") || h.LastUpdated != lu {
			t.Fatalf("Peek = %+v, want %q %q %q", h, rt, stringMember(b, "id"), lu)
		}
	})
}
