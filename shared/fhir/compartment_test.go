package fhir

import "testing"

// TestCompartmentPatientsIDsOutliveTheLine: the walk reads the line in
// place, but the ids it hands out are copies: a caller may keep them after
// the line's buffer is reused (as the source's line reader reuses it).
func TestCompartmentPatientsIDsOutliveTheLine(t *testing.T) {
	line := []byte(`{"resourceType":"Observation","id":"o1","subject":{"reference":"Patient/p-17"},"performer":[{"reference":"Patient/p-18"}]}`)
	var ids []string
	CompartmentPatients("Observation", line, func(id string) bool { ids = append(ids, id); return true })
	for i := range line {
		line[i] = 'x'
	}
	if len(ids) != 2 || ids[0] != "p-17" || ids[1] != "p-18" {
		t.Fatalf("ids after the line was overwritten: %q, want [p-17 p-18]", ids)
	}
}
