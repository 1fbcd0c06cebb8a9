package fhir

import (
	"testing"
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
