package fhirsource

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// TestNextSearchIsPrefetched: a patient batch's unit runs one search per
// compartment parameter (Observation: subject, then performer); the next
// search's first page is requested while the current one is still being
// read, and the export is what it is without the overlap.
func TestNextSearchIsPrefetched(t *testing.T) {
	d := sample(t)
	performer := make(chan struct{}, 16)
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if strings.HasPrefix(r.URL.Path, "/Observation") && r.URL.Query().Has("performer") {
			performer <- struct{}{}
		}
		return nil
	}})
	patients := exporttest.GroupMembers(t, d.src, "small-cohort")
	var two []string
	for p := range patients {
		if len(two) < 2 {
			two = append(two, p)
		}
	}
	want := ofTypes(exporttest.ExpectedCompartment(d.src, map[string]bool{two[0]: true, two[1]: true}), "Observation")
	if len(want) < 2 {
		t.Fatalf("%d Observations in the batch, too few to test with", len(want))
	}
	q := export.Query{Level: bulkdata.LevelPatient, Patients: two, Until: &until}
	s := newSource(t, hs.URL, func(o *Options) { o.PageSize = 1000 })
	ctx := context.Background()
	segs, err := s.Plan(ctx, q, "Observation")
	if err != nil || len(segs) != 1 {
		t.Fatalf("plan = %v, %v", segs, err)
	}
	r, err := s.Open(ctx, q, "Observation", segs[0], "")
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	err = export.EachResource(r, func([]byte) bool {
		if got++; got == 1 {
			// The first subject result is out and the subject search has
			// more: the performer search must already be under way.
			select {
			case <-performer:
			case <-time.After(10 * time.Second):
				t.Error("the performer search was not requested while the subject search was read")
			}
		}
		return true
	})
	if err != nil || got != len(want) {
		t.Errorf("read %d Observations (%v), want %d", got, err, len(want))
	}
}
