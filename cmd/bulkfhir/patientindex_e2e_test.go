package main

import (
	"net/http"
	"path/filepath"
	"testing"
)

// TestGroupExportThroughPatientIndex: the first Group export builds the
// patient index in the state directory; after a restart the server reads
// it back, and both exports return exactly the members' compartment.
func TestGroupExportThroughPatientIndex(t *testing.T) {
	s := startServer(t, dataDir)
	src := sourceResources(t, dataDir)
	want := expectedCompartment(src, groupMembers(t, src, "small-cohort"))
	url := s.base + "/Group/small-cohort/$export"
	sameSet(t, download(t, waitManifest(t, kickoff(t, http.MethodGet, url, kickHeaders(), ""), nil)), want)
	fences, _ := filepath.Glob(filepath.Join(s.state, "patient-index", "*.fence.json"))
	if len(fences) == 0 {
		t.Fatal("no patient index in the state directory after a Group export")
	}
	s.stop()
	s.start()
	sameSet(t, download(t, waitManifest(t, kickoff(t, http.MethodGet, url, kickHeaders(), ""), nil)), want)
	again, _ := filepath.Glob(filepath.Join(s.state, "patient-index", "*.fence.json"))
	if len(again) != len(fences) {
		t.Errorf("%d index fences after the restart, %d before: the index was not reused", len(again), len(fences))
	}
}
