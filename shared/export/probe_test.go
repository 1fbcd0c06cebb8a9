package export_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// probingSource is a Source whose upstream has its own clock, or answers
// only when the caller gives up (block).
type probingSource struct {
	exporttest.Source
	now   time.Time
	block bool
}

func (p *probingSource) Probe(ctx context.Context) (export.Probe, error) {
	if p.block {
		<-ctx.Done()
		return export.Probe{}, ctx.Err()
	}
	return export.Probe{Now: p.now, State: `{"probed":true}`}, nil
}

func TestKickoffRecordsTheProbe(t *testing.T) {
	clock := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	src := &probingSource{Source: exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}, now: clock}
	jobs := exporttest.NewJobStore()
	svc := export.NewService(jobs, exporttest.NewFileStore(), &nopRunner{}, src, export.Config{}, slog.New(slog.DiscardHandler))
	job, err := svc.Kickoff(context.Background(), "c1", &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}, "u", "")
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := jobs.Get(context.Background(), job.ID)
	if !stored.TransactionTime.Equal(clock) || stored.Upstream != `{"probed":true}` {
		t.Fatalf("transactionTime %v, upstream %q: want the probe's %v and state", stored.TransactionTime, stored.Upstream, clock)
	}
}

// A client that disconnects while the kick-off waits on the upstream is
// logged at info, not as a source failure.
func TestClientDisconnectDuringProbeIsNotAnError(t *testing.T) {
	var logs bytes.Buffer
	src := &probingSource{Source: exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}, block: true}
	svc := export.NewService(exporttest.NewJobStore(), exporttest.NewFileStore(), &nopRunner{}, src, export.Config{}, slog.New(slog.NewJSONHandler(&logs, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := svc.Kickoff(ctx, "c1", &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}, "u", ""); err == nil {
		t.Fatal("kick-off succeeded without its upstream")
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "client disconnected") {
		t.Fatalf("logs: %s", logs.String())
	}
}

// throttledSource's readers give up after every third line, as a source
// does when its upstream asks to wait past the chunk's deadline.
type throttledSource struct {
	exporttest.Source
	sawStop bool // a reader was opened with the chunk's stop time
}

func (s *throttledSource) Open(ctx context.Context, q export.Query, t, seg, cursor string) (export.Reader, error) {
	_, s.sawStop = export.StopTime(ctx)
	r, err := s.Source.Open(ctx, q, t, seg, cursor)
	return &throttledReader{Reader: r}, err
}

type throttledReader struct {
	export.Reader
	n int
}

func (r *throttledReader) Next() ([]byte, error) {
	if r.n++; r.n%4 == 0 {
		return nil, fmt.Errorf("the upstream asks to wait: %w", export.ErrOutOfTime)
	}
	return r.Reader.Next()
}

// A chunk whose read runs out of time ends with its cursor, not an error;
// the chunks after it export the rest exactly once.
func TestChunkOutOfTimeInAReadKeepsItsCursor(t *testing.T) {
	src := &throttledSource{Source: exporttest.Source{Lines: map[string][]string{"Observation": lines("Observation", 10)}}}
	jobs, files := exporttest.NewJobStore(), exporttest.NewFileStore()
	steps := export.NewSteps(jobs, files, src, export.Config{ChunkBudget: time.Hour}, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := jobs.Create(ctx, &export.Job{ID: "j", Owner: "c", Status: export.StatusAccepted, TransactionTime: time.Now(),
		Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}}); err != nil {
		t.Fatal(err)
	}
	plan, err := steps.Plan(ctx, export.JobRef{JobID: "j"})
	if err != nil {
		t.Fatal(err)
	}
	units, err := steps.Units(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	var cur *export.Cursor
	calls := 0
	for done := false; !done; calls++ {
		res, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: "j", Unit: units[0], Cursor: cur})
		if err != nil {
			t.Fatalf("chunk %d failed: %v", calls+1, err)
		}
		done, cur = res.Done, res.Cursor
		if calls > 20 {
			t.Fatal("no progress")
		}
	}
	if !src.sawStop {
		t.Error("the source was not told the chunk's stop time")
	}
	if calls < 3 || cur.Resources != 10 {
		t.Fatalf("%d chunks, %d resources: want several chunks and the 10 resources once", calls, cur.Resources)
	}
	n := 0
	for k, v := range files.Snapshot() {
		if !strings.Contains(k, "/errors.") {
			n += strings.Count(v, "\n")
		}
	}
	if n != 10 {
		t.Fatalf("%d lines written, want 10", n)
	}
}
