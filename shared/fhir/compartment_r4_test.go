package fhir

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"testing"
)

// TestPatientCompartmentMatchesR4 checks the compartment table against the
// official R4 CompartmentDefinition/patient and the expressions of its
// search parameters (testdata/r4-patient-compartment.json, written by
// internal/compartmentgen from the published definitions): every type,
// every parameter name, every path, in order.
func TestPatientCompartmentMatchesR4(t *testing.T) {
	b, err := os.ReadFile("testdata/r4-patient-compartment.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Resources map[string][]struct {
			Param string   `json:"param"`
			Paths []string `json:"paths"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Resources) < 60 {
		t.Fatalf("the fixture lists %d types; want the whole compartment", len(doc.Resources))
	}
	want := map[string][]CompartmentParam{}
	for typ, ps := range doc.Resources {
		for _, p := range ps {
			want[typ] = append(want[typ], CompartmentParam{Name: p.Param, Paths: p.Paths})
		}
	}
	for typ, w := range want {
		if got := patientCompartment[typ]; !reflect.DeepEqual(got, w) {
			t.Errorf("%s: got %v, want %v (R4)", typ, got, w)
		}
	}
	for typ := range patientCompartment {
		if _, ok := want[typ]; !ok {
			t.Errorf("%s is not in the R4 Patient compartment", typ)
		}
	}
	if got := PatientCompartmentParams("RequestGroup"); !slices.ContainsFunc(got, func(p CompartmentParam) bool { return p.Name == "participant" }) {
		t.Errorf("RequestGroup params = %v, want participant", got)
	}
}
