package typefilter

import (
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/searchparam"
	"github.com/bulkfhir/bulkfhir/shared/typefilter/typefiltertest"
)

// The cases' want lists are the oracle: worked out by hand from the R4
// search rules for each fixture resource.
func TestMatch(t *testing.T) {
	lines := typefiltertest.Lines()
	for _, tc := range typefiltertest.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			s, err := Compile(tc.Type, tc.Queries)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			var got []string
			for _, l := range lines {
				if gjson.GetBytes(l, "resourceType").Str == tc.Type && s.Match(l) {
					got = append(got, gjson.GetBytes(l, "id").Str)
				}
			}
			if !slices.Equal(got, tc.Want) {
				t.Errorf("%s?%s matched %v, want %v", tc.Type, strings.Join(tc.Queries, " OR "), got, tc.Want)
			}
		})
	}
}

func TestPlusIsNotASpace(t *testing.T) {
	f, err := Parse("Observation", "date=2024-03-01T11:00:00+01:00")
	if err != nil {
		t.Fatal(err)
	}
	if !f.Match([]byte(`{"resourceType":"Observation","id":"o1","effectiveDateTime":"2024-03-01T10:00:00Z"}`)) {
		t.Error("a + time zone was not read as one")
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		typ, query, param, reason string
	}{
		{"Observation", "code:in=http://example.org/vs", "code:in", "modifier"},
		{"Observation", "code-value-quantity=4548-4$gt5", "code-value-quantity", "composite"},
		{"Bundle", "composition=Composition/1", "composition", "FHIRPath"},
		{"Observation", "subject.name=x", "subject.name", "chained"},
		{"Observation", "_has:Observation:patient:code=1", "_has:Observation:patient:code", "_has"},
		{"Observation", "nosuch=1", "nosuch", "not a search parameter"},
		{"Observation", "_sort=date", "_sort", "result parameter"},
		{"Observation", "_text=x", "_text", "no FHIRPath"},
		{"Observation", "date=2024-13", "date", "not a FHIR date"},
		{"Patient", "birthdate=xx2020", "birthdate", "not a FHIR date"},
		{"Observation", "value-quantity=1|a", "value-quantity", "number|system|code"},
		{"Observation", "value-quantity=abc", "value-quantity", "not a number"},
		{"Patient", "name:missing=maybe", "name:missing", "true or false"},
		{"Observation", "subject=Nope/1", "subject", "Type/id"},
		{"Observation", "status=final&code:below=x", "code:below", "modifier"},
		{"Observation", "", "Observation", "no search parameters"},
	}
	for _, tc := range tests {
		t.Run(tc.query, func(t *testing.T) {
			_, err := Parse(tc.typ, tc.query)
			pe, ok := err.(*ParamError)
			if !ok {
				t.Fatalf("Parse(%q) error = %v, want a *ParamError", tc.query, err)
			}
			if pe.Param != tc.param || !strings.Contains(pe.Reason, tc.reason) {
				t.Errorf("got %q: %q, want %q: …%s…", pe.Param, pe.Reason, tc.param, tc.reason)
			}
		})
	}
}

func TestCheckDropsOnlyTheBadParameters(t *testing.T) {
	kept, problems := Check("Observation", "status=final&code:in=x&nosuch=2&date=ge2024")
	if kept != "status=final&date=ge2024" {
		t.Errorf("kept %q, want status=final&date=ge2024", kept)
	}
	var names []string
	for _, p := range problems {
		names = append(names, p.Param)
	}
	if !slices.Equal(names, []string{"code:in", "nosuch"}) {
		t.Errorf("problems %v, want code:in and nosuch", names)
	}
	if kept, problems := Check("Observation", "status=final"); kept != "status=final" || problems != nil {
		t.Errorf("a good query: got %q, %v", kept, problems)
	}
}

func TestSupported(t *testing.T) {
	codes := map[string]bool{}
	for _, p := range Supported("Patient") {
		codes[p.Code] = true
	}
	for _, c := range []string{"_id", "_lastUpdated", "name", "birthdate", "gender", "identifier", "general-practitioner", "deceased"} {
		if !codes[c] {
			t.Errorf("Patient %s is not listed as supported", c)
		}
	}
	for _, c := range []string{"_text", "_content", "_query"} {
		if codes[c] {
			t.Errorf("Patient %s is listed but cannot be evaluated", c)
		}
	}
}

func TestMatchOtherType(t *testing.T) {
	f, err := Parse("Patient", "_id=o1")
	if err != nil {
		t.Fatal(err)
	}
	if f.Match([]byte(`{"resourceType":"Observation","id":"o1"}`)) {
		t.Error("a Patient filter matched an Observation")
	}
	if f.Match([]byte(`not json`)) {
		t.Error("a filter matched bytes that are not JSON")
	}
}

func TestCompileEveryDefinedExpression(t *testing.T) {
	// Every R4 expression of an evaluable type compiles, except the few
	// outside the FHIRPath subset, which are refused by name.
	var refused []string
	for typ := range searchparam.AllTypes() {
		for _, p := range searchparam.ForType(typ) {
			if _, ok := modifiers[p.Type]; !ok || p.Expression == "" {
				continue
			}
			if _, err := compileParam(typ, p); err != nil {
				refused = append(refused, typ+"."+p.Code)
			}
		}
	}
	slices.Sort(refused)
	want := []string{"Bundle.composition", "Bundle.message"} // entry[0]
	if !slices.Equal(refused, want) {
		t.Errorf("refused %v, want only %v", refused, want)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"code=4548-4", "date=ge2024-01&status:not=final", "value-quantity=5||mg", "subject:Patient=1", "name:missing=true", "%zz=1"} {
		f.Add("Observation", s)
	}
	f.Fuzz(func(t *testing.T, typ, query string) {
		flt, err := Parse(typ, query)
		if err == nil {
			flt.Match([]byte(`{"resourceType":"Observation","id":"x","code":{"coding":[{"code":"1"}]},"effectivePeriod":{"start":"2020"}}`))
		}
	})
}
