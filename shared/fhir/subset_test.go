package fhir

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// TestSubsetScanMatchesGJSON: the one-pass subsetter gives, byte for byte,
// what the gjson walk gives, on every line of a generated dataset and on
// crafted lines (blanks, escaped keys, a meta that is not an object),
// for several selections.
func TestSubsetScanMatchesGJSON(t *testing.T) {
	dir := t.TempDir()
	if _, err := sampledata.Generate(dir, sampledata.Options{Patients: 20, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	lines := [][]byte{
		[]byte(`{ "resourceType" : "Observation", "id":"1", "status" : "final" , "meta" : { "versionId" : "1" } }`),
		[]byte(`{"resourceType":"Observation","id":"2","st\u0061tus":"final","code":{}}`),
		[]byte(`{"resourceType":"Observation","id":"3","meta":[1],"status":"final"}`),
		[]byte(`{"resourceType":"Patient","id":"4","_birthDate":{"id":"x"},"birthDate":"2000-01-01","name":[{"family":"Ä\"q"}]}`),
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			lines = append(lines, append([]byte(nil), sc.Bytes()...))
		}
		f.Close()
	}
	selections := [][][2]string{
		{{"", "id"}, {"", "status"}, {"", "subject"}},
		{{"Patient", "name"}, {"Observation", "value[x]"}, {"", "meta"}},
		{{"", "birthDate"}, {"Encounter", "period"}, {"", "text"}},
	}
	scanned := 0
	var reused []byte
	var rerr error
	for _, sel := range selections {
		s := NewElementSelector(sel)
		for _, line := range lines {
			h, _ := Peek(line)
			typ := h.ResourceType
			if typ == "" {
				typ = "Observation"
			}
			if !s.Applies(typ) {
				continue
			}
			want, werr := s.subsetGJSON(typ, line)
			got, gerr := s.Subset(typ, line)
			if (werr != nil) != (gerr != nil) || string(got) != string(want) {
				t.Fatalf("%v on %.150s:\n got %s (%v)\nwant %s (%v)", sel, line, got, gerr, want, werr)
			}
			if _, ok, _ := s.subsetScan(nil, typ, line); ok {
				scanned++
			}
			// AppendSubset into one reused buffer gives the same bytes,
			// after whatever dst held, and leaves the line as it was.
			before := string(line)
			reused, rerr = s.AppendSubset(append(reused[:0], "prefix"...), typ, line)
			if (rerr != nil) != (gerr != nil) || (rerr == nil && string(reused) != "prefix"+string(got)) || string(line) != before {
				t.Fatalf("AppendSubset on %.150s:\n got %s (%v)\nwant prefix%s", line, reused, rerr, got)
			}
		}
	}
	metas := 0
	for _, line := range lines {
		m := gjson.GetBytes(line, "meta")
		if !m.IsObject() {
			continue
		}
		for _, meta := range []string{m.Raw, `{}`, `{"tag":[{"code":"x"}]}`, `{"t\u0061g":[]}`} {
			got, gerr := tagSubsetted([]byte(meta))
			want, werr := tagSubsettedGJSON([]byte(meta))
			if string(got) != string(want) || (gerr != nil) != (werr != nil) {
				t.Fatalf("tagSubsetted(%s) = %s, the gjson walk gives %s", meta, got, want)
			}
		}
		metas++
	}
	if metas == 0 {
		t.Fatal("no line had a meta")
	}
	if scanned < len(lines) {
		t.Fatalf("only %d lines went through the one-pass subsetter", scanned)
	}
}

// FuzzSubset: on any bytes, the one-pass subsetter and the gjson walk
// agree whenever the bytes are a valid resource (the engine subsets only
// lines Peek accepted).
func FuzzSubset(f *testing.F) {
	for _, seed := range []string{
		`{"resourceType":"Observation","id":"1","meta":{"lastUpdated":"2020-01-01T00:00:00Z"},"status":"final","valueQuantity":{"value":1}}`,
		`{ "resourceType" : "Patient", "meta" : { "tag" : [ {"code":"SUBSETTED","system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue"} ] }, "name":[] }`,
		`{"resourceType":"Encounter","st\u0061tus":"x","_status":{},"meta":{}}`,
		`{"resourceType":"Observation","meta":[],"status":1}`,
	} {
		f.Add([]byte(seed))
	}
	sel := NewElementSelector([][2]string{{"", "status"}, {"Patient", "name"}, {"", "value[x]"}})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := Peek(b)
		if !ok || !sel.Applies(h.ResourceType) {
			return
		}
		want, werr := sel.subsetGJSON(h.ResourceType, b)
		got, gerr := sel.Subset(h.ResourceType, b)
		if (werr != nil) != (gerr != nil) || string(got) != string(want) {
			t.Fatalf("Subset(%s) = %s (%v), the gjson walk gives %s (%v)", b, got, gerr, want, werr)
		}
	})
}
