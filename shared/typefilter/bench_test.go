package typefilter

import "testing"

var benchLine = []byte(`{"resourceType":"Observation","id":"28da5099-9ff4-4558-b185-6a9d59566514","meta":{"lastUpdated":"2025-04-03T16:55:16.695Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"4548-4","display":"Hemoglobin A1c/Hemoglobin.total in Blood"}],"text":"Hemoglobin A1c/Hemoglobin.total in Blood"},"subject":{"reference":"Patient/ff4ae39f-6bb4-4fb8-9a3d-1e601c115a0b"},"encounter":{"reference":"Encounter/8e05e733-7b49-4b52-9eea-3cf2ebe4bdac"},"effectiveDateTime":"2025-04-03T16:55:16.695Z","issued":"2025-04-03T16:55:16.695Z","performer":[{"reference":"Practitioner/6305f095-44ab-4022-89ef-bcb0ddd8a15b"}],"valueQuantity":{"value":7.2,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}}`)

// BenchmarkMatch measures the per-line cost of a _typeFilter on the
// NDJSON sources (bytes/s of resource lines filtered).
func BenchmarkMatch(b *testing.B) {
	for _, bc := range []struct{ name, query string }{
		{"token", "code=http://loinc.org|4548-4"},
		{"token+date", "category=laboratory&date=ge2025-01-01"},
		{"quantity", "value-quantity=gt5|http://unitsofmeasure.org|%25"},
		{"string:text", "code:text=hemo"},
		{"reference", "patient=Patient/ff4ae39f-6bb4-4fb8-9a3d-1e601c115a0b"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			f, err := Parse("Observation", bc.query)
			if err != nil {
				b.Fatal(err)
			}
			if !f.Match(benchLine) {
				b.Fatal("the benchmark filter does not match")
			}
			b.SetBytes(int64(len(benchLine)))
			b.ReportAllocs()
			for b.Loop() {
				f.Match(benchLine)
			}
		})
	}
}
