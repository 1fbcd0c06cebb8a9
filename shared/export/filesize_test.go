package export_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// TestFileSizeBounds: _maximumFileSize lowers the roll size for one job,
// never raises it; _minimumFileSize keeps a chunk stopped by its budget
// filling its file first.
func TestFileSizeBounds(t *testing.T) {
	const n = 2000
	lineBytes := int64(len(lines("Observation", 1)[0]) + 1)
	tests := []struct {
		name     string
		cfg      export.Config
		max, min int64
		// every output file but a unit's last is within [wantMin, wantMax]
		wantMin, wantMax int64
	}{
		{name: "server size", cfg: export.Config{MaxFileBytes: 40000}, wantMin: 40000 - lineBytes, wantMax: 40000},
		{name: "smaller maximum", cfg: export.Config{MaxFileBytes: 40000}, max: 10000, wantMin: 10000 - lineBytes, wantMax: 10000},
		{name: "larger maximum keeps the server's", cfg: export.Config{MaxFileBytes: 40000}, max: 90000, wantMin: 40000 - lineBytes, wantMax: 40000},
		{name: "budget cuts files short", cfg: export.Config{ChunkBudget: time.Nanosecond}, wantMin: 0, wantMax: 512 * lineBytes},
		{name: "minimum outlasts the budget", cfg: export.Config{ChunkBudget: time.Nanosecond}, min: 60000, wantMin: 60000, wantMax: 60000 + 512*lineBytes},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &exporttest.Source{Lines: map[string][]string{"Observation": lines("Observation", n)}}
			jobs, files := exporttest.NewJobStore(), exporttest.NewFileStore()
			steps := export.NewSteps(jobs, files, src, tc.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			clock := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
			steps.SetClock(func() time.Time { clock = clock.Add(time.Millisecond); return clock })
			ctx := context.Background()
			if err := jobs.Create(ctx, &export.Job{ID: "job1", Owner: "c", Status: export.StatusAccepted, TransactionTime: clock,
				Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, MaxFileSize: tc.max, MinFileSize: tc.min}}); err != nil {
				t.Fatal(err)
			}
			plan, err := steps.Plan(ctx, export.JobRef{JobID: "job1"})
			if err != nil {
				t.Fatal(err)
			}
			var cur *export.Cursor
			for done := false; !done; {
				res, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: plan.Units[0], Cursor: cur})
				if err != nil {
					t.Fatal(err)
				}
				cur, done = res.Cursor, res.Done
			}
			recorded, _ := jobs.Files(ctx, "job1")
			var total int64
			for i, f := range recorded {
				total += f.Count
				if body := files.Snapshot()[f.Key]; int64(len(body)) != f.Bytes {
					t.Errorf("%s: recorded %d bytes, file has %d", f.Key, f.Bytes, len(body))
				}
				last := i == len(recorded)-1
				if f.Bytes > tc.wantMax || (!last && f.Bytes < tc.wantMin) {
					t.Errorf("file %d of %d has %d bytes, want %d..%d", i+1, len(recorded), f.Bytes, tc.wantMin, tc.wantMax)
				}
			}
			if total != n {
				t.Errorf("files hold %d resources, want %d", total, n)
			}
		})
	}
}

func TestKickoffFileSizeFloor(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}
	for _, lenient := range []bool{false, true} {
		svc := export.NewService(exporttest.NewJobStore(), exporttest.NewFileStore(), &nopRunner{}, src,
			export.Config{MaxFileBytes: 8 << 20, MinFileBytes: 1 << 20}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		req := &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, MaxFileSize: 1000, Lenient: lenient}
		job, err := svc.Kickoff(context.Background(), "c", req, "u", "")
		if !lenient {
			var be *bulkdata.Error
			if !errors.As(err, &be) || be.Status != 400 || !strings.Contains(string(be.Outcome.JSON()), "_maximumFileSize") {
				t.Errorf("strict: err = %v, want 400 naming _maximumFileSize", err)
			}
			continue
		}
		if err != nil || job.Request.MaxFileSize != 0 || len(job.Request.Ignored) != 1 {
			t.Errorf("lenient: %v, request %+v; want the size dropped with a warning", err, job.Request)
		}
	}
	// At or above the floor it is kept.
	svc := export.NewService(exporttest.NewJobStore(), exporttest.NewFileStore(), &nopRunner{}, src,
		export.Config{MaxFileBytes: 8 << 20, MinFileBytes: 1 << 20}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	job, err := svc.Kickoff(context.Background(), "c", &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, MaxFileSize: 1 << 20}, "u", "")
	if err != nil || job.Request.MaxFileSize != 1<<20 {
		t.Errorf("at the floor: %v, %+v", err, job)
	}
}
