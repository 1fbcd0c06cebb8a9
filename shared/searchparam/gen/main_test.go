package main

import "testing"

func TestBranchesFor(t *testing.T) {
	tests := []struct {
		expr, typ, base, want string
	}{
		{"Observation.code", "Observation", "Observation", "Observation.code"},
		{"AllergyIntolerance.code | Condition.code | (MedicationRequest.medication.ofType(CodeableConcept))", "MedicationRequest", "MedicationRequest",
			"(MedicationRequest.medication.ofType(CodeableConcept))"},
		{"AllergyIntolerance.code | Condition.code", "Patient", "Patient", ""},
		{"Resource.meta.lastUpdated", "Patient", "Resource", "Patient.meta.lastUpdated"},
		{"name | alias", "InsurancePlan", "InsurancePlan", "name | alias"},
		{"ActivityDefinition.relatedArtifact.where(type='composed-of').resource", "ActivityDefinition", "ActivityDefinition",
			"ActivityDefinition.relatedArtifact.where(type='composed-of').resource"},
		{"(Observation.value.ofType(string)) | (Observation.value.ofType(CodeableConcept)).text", "Observation", "Observation",
			"(Observation.value.ofType(string)) | (Observation.value.ofType(CodeableConcept)).text"},
		{"", "Patient", "Resource", ""},
	}
	for _, tc := range tests {
		if got := branchesFor(tc.expr, tc.typ, tc.base); got != tc.want {
			t.Errorf("branchesFor(%q, %s) = %q, want %q", tc.expr, tc.typ, got, tc.want)
		}
	}
}

func TestSplitUnion(t *testing.T) {
	got := splitUnion("(A.b | A.c).d | A.e.where(f='x|y')")
	if len(got) != 2 || got[0] != "(A.b | A.c).d" || got[1] != "A.e.where(f='x|y')" {
		t.Errorf("splitUnion = %q", got)
	}
}
