package export_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// refSource is a source whose positions must not travel between states.
type refSource struct{ *exporttest.Source }

func (refSource) CursorsByReference() bool { return true }

// TestSensitiveCursorsGoByReference: a source whose positions can name
// patients (an upstream's next links) never has one in a chunk's result
// (the Step Functions state) or in the unit's record: only an object key,
// and the unit still resumes from it to the same output.
func TestSensitiveCursorsGoByReference(t *testing.T) {
	for _, byRef := range []bool{true, false} {
		inner := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1500)}}
		var src export.Source = inner
		if byRef {
			src = refSource{inner}
		}
		cfg := export.Config{ChunkBudget: time.Nanosecond}
		f := newFixture(t, nil, cfg)
		f.steps = export.NewSteps(f.jobs, f.files, src, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		ctx := context.Background()
		plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
		if err != nil {
			t.Fatal(err)
		}
		chunks := 0
		for _, u := range units(t, f.steps, plan) {
			var cur *export.Cursor
			for {
				res, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: u, Cursor: cur})
				if err != nil {
					t.Fatal(err)
				}
				chunks++
				if res.Done {
					break
				}
				if byRef && (res.Cursor.Source != "" || res.Cursor.SourceRef == "") {
					t.Fatalf("a sensitive position travels inline: %+v", res.Cursor)
				}
				if !byRef && res.Cursor.Source == "" {
					t.Fatalf("negative control: an ordinary short position went by reference: %+v", res.Cursor)
				}
				cur = res.Cursor
			}
		}
		if chunks < 2 {
			t.Fatalf("%d chunks; the test needs a resumed unit", chunks)
		}
		if got := len(outputLines(f)); got != 1500 {
			t.Errorf("by reference %v: %d lines exported, want 1500", byRef, got)
		}
	}
}
