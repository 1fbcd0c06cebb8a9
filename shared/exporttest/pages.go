package exporttest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

// ComparePages is the oracle of paged manifests (N-04) over the pages a
// client walked, each a list of its file items (as "kind path count", links
// stripped of their signatures): the pages seen while the export ran are
// unchanged at completion, no page holds more than max items, and no item
// is listed twice.
func ComparePages(t testing.TB, running, complete [][]string, max int) {
	t.Helper()
	seen := map[string]bool{}
	for i, p := range complete {
		if len(p) > max {
			t.Errorf("page %d has %d items, more than %d", i, len(p), max)
		}
		if i < len(running) && strings.Join(p, "|") != strings.Join(running[i], "|") {
			t.Errorf("page %d changed at completion:\n%v\n%v", i, running[i], p)
		}
		for _, f := range p {
			if seen[f] {
				t.Errorf("%s listed twice", f)
			}
			seen[f] = true
		}
	}
	if len(complete) < len(running) {
		t.Errorf("%d pages at completion, fewer than the %d seen while running", len(complete), len(running))
	}
}

// CompletedWithFiles makes a completed system export of the given owner in
// jobs with files one-line Observation file records spread over units
// units (no objects: a manifest is built from the records), paged or not,
// and returns its id. The records are written by 32 writers at once, as a
// remote store is slow one by one.
func CompletedWithFiles(t testing.TB, jobs export.JobStore, owner, requestURL string, files, units int, paged bool) string {
	t.Helper()
	ctx := context.Background()
	id := export.NewJobID()
	now := time.Now().UTC()
	job := &export.Job{ID: id, Owner: owner, Status: export.StatusAccepted, TransactionTime: now,
		RequestURL: requestURL, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour),
		Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, AllowPartialManifests: paged}}
	if err := jobs.Create(ctx, job); err != nil {
		t.Fatal(err)
	}
	plan := &export.PlanRef{Key: export.PlanKey(id), Units: units, Types: []string{"Observation"},
		Groups: []export.UnitGroup{{Name: "Observation", Units: units}}}
	if _, err := jobs.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress, Plan: plan}); err != nil {
		t.Fatal(err)
	}
	work := make(chan int)
	errs := make(chan error, files)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				unit := export.UnitID("Observation", i%units)
				errs <- jobs.PutFile(ctx, id, export.File{Key: export.FileKey(id, unit, "Observation", i/units),
					Kind: export.KindOutput, Type: "Observation", Count: 1, Bytes: 100, Unit: unit, Seq: i / units})
			}
		}()
	}
	for i := 0; i < files; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for u := 0; u < units; u++ {
		if err := jobs.SaveProgress(ctx, id, export.UnitID("Observation", u), export.UnitProgress{Resources: int64(files / units), Done: true}); err != nil {
			t.Fatal(err)
		}
	}
	done := now.Add(time.Second)
	exp := done.Add(time.Hour)
	if _, err := jobs.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCompleted,
		CompletedAt: &done, ExpiresAt: &exp}); err != nil {
		t.Fatal(err)
	}
	return id
}
