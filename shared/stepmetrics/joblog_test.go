package stepmetrics_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/joblog"
	"github.com/bulkfhir/bulkfhir/shared/metrics"
	"github.com/bulkfhir/bulkfhir/shared/stepmetrics"
)

// loggingSource logs from below the steps with a logger that knows nothing
// of jobs, as the upstream client's retry lines do.
type loggingSource struct {
	*exporttest.Source
	log *slog.Logger
}

func (s loggingSource) Open(ctx context.Context, q export.Query, typ, seg, cursor string) (export.Reader, error) {
	s.log.WarnContext(ctx, "upstream retry", "url", "https://fhir.example.org/Patient?…")
	return s.Source.Open(ctx, q, typ, seg, cursor)
}

// syncBuffer is stdout as the functions share it: slog and EMF lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestEveryLineOfTheExportFunctionNamesItsJob: every line the export
// function writes while it runs a job's steps (the steps' own, a source's
// that knows no job, the EMF metric lines, the failure) has "job".
func TestEveryLineOfTheExportFunctionNamesItsJob(t *testing.T) {
	for _, withHandler := range []bool{true, false} {
		out := &syncBuffer{}
		var h slog.Handler = slog.NewJSONHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug})
		if withHandler {
			h = joblog.NewHandler(h)
		}
		log := slog.New(h)
		ctx := context.Background()
		src := loggingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": {`{"resourceType":"Patient","id":"p1"}`}}}, log: log}
		jobs := exporttest.NewJobStore()
		if err := jobs.Create(ctx, &export.Job{ID: "job7", Owner: "c", Status: export.StatusAccepted,
			Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}}); err != nil {
			t.Fatal(err)
		}
		steps := stepmetrics.New(export.NewSteps(jobs, exporttest.NewFileStore(), src, export.Config{}, log), jobs, src, metrics.NewEMF(out, "bulkfhir", "s"))
		plan, err := steps.Plan(ctx, export.JobRef{JobID: "job7"})
		if err != nil {
			t.Fatal(err)
		}
		units, _ := steps.Units(ctx, plan)
		for _, u := range units {
			if _, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: "job7", Unit: u}); err != nil {
				t.Fatal(err)
			}
		}
		if err := steps.Fail(ctx, export.FailInput{JobID: "job7", Error: "test"}); err != nil {
			t.Fatal(err)
		}
		lines, missing := 0, 0
		sc := bufio.NewScanner(&out.b)
		for sc.Scan() {
			lines++
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("not JSON: %s", sc.Text())
			}
			if m["job"] != "job7" {
				missing++
				if withHandler {
					t.Errorf("line without job: %s", sc.Text())
				}
			}
		}
		if lines < 3 {
			t.Fatalf("only %d lines were written", lines)
		}
		// Negative control: without the handler the source's line has no job.
		if !withHandler && missing == 0 {
			t.Error("without joblog.Handler every line had a job: the check cannot fail")
		}
	}
}
