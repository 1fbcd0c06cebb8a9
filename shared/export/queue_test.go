package export_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// startRecorder is a Runner that records the order of starts.
type startRecorder struct {
	mu      sync.Mutex
	started []string
}

func (r *startRecorder) Start(_ context.Context, id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = append(r.started, id)
	return nil
}
func (r *startRecorder) Stop(context.Context, string) error { return nil }
func (r *startRecorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.started)
}

// TestQueueAdmitsInKickoffOrder: with 2 running places, kick-offs beyond
// them wait as accepted with their place in line in X-Progress, and start in
// kick-off order as a cancel (at once) and a completion free places.
func TestQueueAdmitsInKickoffOrder(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}
	jobs := exporttest.NewJobStore()
	runner := &startRecorder{}
	svc := export.NewService(jobs, exporttest.NewFileStore(), runner, src, export.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	clock := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	svc.SetClock(func() time.Time { clock = clock.Add(time.Second); return clock })
	svc.SetQueue(jobs, 2)
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5; i++ {
		j, err := svc.Kickoff(ctx, "c1", &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}, "u", "")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	if got := runner.list(); !slices.Equal(got, ids[:2]) {
		t.Fatalf("started %v, want the first two %v", got, ids[:2])
	}
	progress := func(id string) string {
		t.Helper()
		rep, err := svc.Status(ctx, "c1", id)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Job.Status != export.StatusAccepted {
			t.Fatalf("job %s is %s, want accepted", id, rep.Job.Status)
		}
		return rep.Progress
	}
	for i, want := range []string{"starting", "starting", "queued: 0 jobs ahead", "queued: 1 job ahead", "queued: 2 jobs ahead"} {
		if got := progress(ids[i]); got != want {
			t.Errorf("X-Progress of job %d = %q, want %q", i, got, want)
		}
	}
	// A cancel frees its place at once: the third job starts.
	if err := svc.Cancel(ctx, "c1", ids[0]); err != nil {
		t.Fatal(err)
	}
	if got := runner.list(); !slices.Equal(got, ids[:3]) {
		t.Fatalf("after a cancel started %v, want %v", got, ids[:3])
	}
	// A cancelled waiting job gives up its place in line.
	if err := svc.Cancel(ctx, "c1", ids[3]); err != nil {
		t.Fatal(err)
	}
	if got := progress(ids[4]); got != "queued: 0 jobs ahead" {
		t.Errorf("X-Progress of the last job after a cancel ahead of it = %q", got)
	}
	// A completion frees a place; the next Dispatch (the finalize's, or
	// the sweep's) starts the last job, never the cancelled one.
	if _, err := jobs.Transition(ctx, ids[1], export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusCompleted}); err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(ids[:3]), ids[4]); !slices.Equal(runner.list(), want) {
		t.Fatalf("after a completion started %v, want %v", runner.list(), want)
	}
	if rep.Running != 2 || rep.Queued != 0 || !slices.Equal(rep.Started, []string{ids[4]}) {
		t.Errorf("sweep report = %+v, want 2 running, 0 queued, started [%s]", rep, ids[4])
	}
}

// TestQueueOffStartsAtOnce: without a queue every kick-off starts its job.
func TestQueueOffStartsAtOnce(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}
	jobs := exporttest.NewJobStore()
	runner := &startRecorder{}
	svc := export.NewService(jobs, exporttest.NewFileStore(), runner, src, export.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.SetQueue(jobs, 0)
	for i := 0; i < 3; i++ {
		if _, err := svc.Kickoff(context.Background(), "c1", &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}, "u", ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(runner.list()); n != 3 {
		t.Fatalf("started %d jobs, want 3", n)
	}
}
