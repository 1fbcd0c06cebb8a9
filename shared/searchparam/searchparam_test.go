package searchparam

import (
	"slices"
	"sort"
	"testing"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		typ, code string
		want      Param
		ok        bool
	}{
		{"Observation", "code", Param{Code: "code", Type: Token, Expression: "Observation.code", URL: "http://hl7.org/fhir/SearchParameter/clinical-code"}, true},
		{"Patient", "birthdate", Param{Code: "birthdate", Type: Date, Expression: "Patient.birthDate", URL: "http://hl7.org/fhir/SearchParameter/individual-birthdate"}, true},
		{"Patient", "_id", Param{Code: "_id", Type: Token, Expression: "Patient.id", URL: "http://hl7.org/fhir/SearchParameter/Resource-id"}, true},
		{"Condition", "patient", Param{Code: "patient", Type: Reference, Expression: "Condition.subject.where(resolve() is Patient)", URL: "http://hl7.org/fhir/SearchParameter/clinical-patient"}, true},
		{"Patient", "no-such", Param{}, false},
		{"NoSuchType", "_id", Param{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.typ+"."+tc.code, func(t *testing.T) {
			got, ok := Lookup(tc.typ, tc.code)
			if ok != tc.ok || got != tc.want {
				t.Errorf("Lookup(%q, %q) = %+v, %v; want %+v, %v", tc.typ, tc.code, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestTablesSorted(t *testing.T) {
	for typ, ps := range byType {
		if !sort.SliceIsSorted(ps, func(i, j int) bool { return ps[i].Code < ps[j].Code }) {
			t.Errorf("%s: parameters are not sorted by code", typ)
		}
	}
	if len(byType) < 140 {
		t.Errorf("got %d resource types, want the ~145 of R4", len(byType))
	}
}

func TestChoiceTypes(t *testing.T) {
	if got := ChoiceTypes("Observation.value"); !slices.Contains(got, "Quantity") || !slices.Contains(got, "CodeableConcept") {
		t.Errorf("Observation.value: got %v, want Quantity and CodeableConcept among them", got)
	}
	if got := ChoiceTypes("Observation.code"); got != nil {
		t.Errorf("Observation.code: got %v, want nil (no choice element)", got)
	}
}
