package export_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// blockSource is a source that returns every resource whatever patients a
// query names, as a careless upstream would: the engine must keep only
// the batch's compartments.
func blockSource() *exporttest.Source {
	obs := func(id, subject string, extra string) string {
		return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"subject":{"reference":"Patient/%s"}%s,"note":[{"text":%q}]}`,
			id, subject, extra, strings.Repeat("x", 60))
	}
	return &exporttest.Source{
		Lines: map[string][]string{
			"Patient": {`{"resourceType":"Patient","id":"p1"}`, `{"resourceType":"Patient","id":"p2"}`,
				`{"resourceType":"Patient","id":"p3"}`, `{"resourceType":"Patient","id":"p9"}`},
			"Observation": {obs("o1a", "p1", ""), obs("o1b", "p1", ""), obs("o1c", "p1", ""), obs("o2a", "p2", ""),
				obs("o3a", "p3", ""), obs("o9a", "p9", ""),
				// In the compartments of p2 (subject) and p1 (performer).
				obs("shared", "p2", `,"performer":[{"reference":"Patient/p1"}]`),
				// In the compartments of p3 (subject, second batch) and p1
				// (performer, first batch): the first batch's block has it.
				obs("across", "p3", `,"performer":[{"reference":"Patient/p1"}]`)},
			"Organization": {`{"resourceType":"Organization","id":"org"}`},
		},
		Groups: map[string][]string{"g": {"p3", "p1", "p2"}},
	}
}

// block is one parsed resource block of an organized file.
type block struct {
	patient string
	lines   []string // "Type/id" after the header
}

func parseBlocks(t *testing.T, body string) []block {
	t.Helper()
	var out []block
	for i, line := range strings.Split(strings.TrimRight(body, "\n"), "\n") {
		var r struct {
			ResourceType string
			ID           string
			Parameter    []struct {
				Name           string
				ValueReference struct{ Reference string }
			}
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if r.ResourceType == "Parameters" {
			if len(r.Parameter) != 1 || r.Parameter[0].Name != "header" || !strings.HasPrefix(r.Parameter[0].ValueReference.Reference, "Patient/") {
				t.Fatalf("malformed header %s", line)
			}
			out = append(out, block{patient: strings.TrimPrefix(r.Parameter[0].ValueReference.Reference, "Patient/")})
			continue
		}
		if len(out) == 0 {
			t.Fatalf("file starts with %s, not a header", line)
		}
		out[len(out)-1].lines = append(out[len(out)-1].lines, r.ResourceType+"/"+r.ID)
	}
	return out
}

// planOrganized plans job2, a Group g export organized by Patient, and
// returns its units.
func planOrganized(t *testing.T, src *exporttest.Source, cfg export.Config) (*fixture, []export.Unit) {
	t.Helper()
	ctx := context.Background()
	f := newFixture(t, src, cfg)
	if err := f.jobs.Create(ctx, &export.Job{ID: "job2", Owner: "c", Status: export.StatusAccepted, TransactionTime: f.clock,
		Request: bulkdata.Request{Level: bulkdata.LevelGroup, GroupID: "g", OutputFormat: bulkdata.NDJSON, OrganizeOutputBy: "Patient"}}); err != nil {
		t.Fatal(err)
	}
	plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "job2"})
	if err != nil {
		t.Fatal(err)
	}
	return f, units(t, f.steps, plan)
}

func TestOrganizedByPatient(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
	}{
		{"one file", 1 << 20},
		{"split blocks", 330},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f, us := planOrganized(t, blockSource(), export.Config{MaxFileBytes: tc.maxBytes, MinFileBytes: 1, PatientBatch: 2})
			if len(us) != 2 || !us[0].Blocks {
				t.Fatalf("units = %+v, want two blocks units (batches of 2)", us)
			}
			for _, u := range us {
				if _, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job2", Unit: u}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job2"}); err != nil {
				t.Fatal(err)
			}
			files, _ := f.jobs.Files(ctx, "job2")
			sort.Slice(files, func(i, j int) bool { return files[i].Key < files[j].Key })
			got := map[string][]string{}
			var prev *block
			continues := ""
			splits := 0
			for _, file := range files {
				body := f.files.Snapshot()[file.Key]
				// count is of resources, block headers left out (SMART's
				// bulk-data-client refuses a file whose count has them).
				resources := strings.Count(body, "\n") - strings.Count(body, `{"resourceType":"Parameters","parameter":[{"name":"header"`)
				if int64(len(body)) != file.Bytes || int64(resources) != file.Count {
					t.Errorf("%s: record says %d bytes %d resources, file has %d bytes %d resources besides block headers", file.Key, file.Bytes, file.Count, len(body), resources)
				}
				if int64(len(body)) > tc.maxBytes {
					t.Errorf("%s has %d bytes, over %d", file.Key, len(body), tc.maxBytes)
				}
				bs := parseBlocks(t, body)
				if continues != "" {
					if continues != file.Key || prev == nil || bs[0].patient != prev.patient {
						t.Errorf("continuesInFile %s, next file %s starts with Patient/%s; want Patient/%s repeated", continues, file.Key, bs[0].patient, prev.patient)
					}
					splits++
				}
				for i, b := range bs {
					if i == 0 && continues == "" && len(got[b.patient]) > 0 {
						t.Errorf("Patient/%s has a second block without continuesInFile", b.patient)
					}
					got[b.patient] = append(got[b.patient], b.lines...)
				}
				continues = file.Continues
				prev = &bs[len(bs)-1]
			}
			if continues != "" {
				t.Errorf("the last file continues in %s", continues)
			}
			want := map[string][]string{
				"p1": {"Patient/p1", "Observation/o1a", "Observation/o1b", "Observation/o1c", "Observation/shared", "Observation/across"},
				"p2": {"Patient/p2", "Observation/o2a"},
				"p3": {"Patient/p3", "Observation/o3a"},
			}
			for p, w := range want {
				if strings.Join(got[p], ",") != strings.Join(w, ",") {
					t.Errorf("block of %s = %v, want %v", p, got[p], w)
				}
			}
			if len(got) != len(want) {
				t.Errorf("blocks for %d patients, want %d: %v", len(got), len(want), got)
			}
			if tc.maxBytes < 1000 && splits == 0 {
				t.Error("no block was split across files")
			}
			for _, obj := range f.files.Snapshot() {
				if bytes.Contains([]byte(obj), []byte(`"o9a"`)) || bytes.Contains([]byte(obj), []byte(`"org"`)) {
					t.Errorf("a resource outside the Group's compartments was exported: %.200s", obj)
				}
			}
		})
	}
}

// TestOrganizedUnitResumesFromItsCursor: a blocks unit whose chunks run out
// of time reads on from its cursor, chunk after chunk, and writes the same
// files as one uninterrupted chunk; every spill part is used once.
func TestOrganizedUnitResumesFromItsCursor(t *testing.T) {
	src := blockSource()
	for i := 0; i < 3000; i++ {
		src.Lines["Observation"] = append(src.Lines["Observation"],
			fmt.Sprintf(`{"resourceType":"Observation","id":"many-%04d","subject":{"reference":"Patient/p%d"}}`, i, 1+i%3))
	}
	run := func(budget time.Duration) (map[string]string, int) {
		ctx := context.Background()
		f, us := planOrganized(t, src, export.Config{MaxFileBytes: 20000, MinFileBytes: 1, PatientBatch: 10, ChunkBudget: budget})
		if len(us) != 1 {
			t.Fatalf("%d units, want one batch", len(us))
		}
		var cur *export.Cursor
		chunks := 0
		for {
			chunks++
			res, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job2", Unit: us[0], Cursor: cur})
			if err != nil {
				t.Fatal(err)
			}
			if res.Done {
				break
			}
			if chunks > 100 {
				t.Fatal("the unit never finished")
			}
			cur = res.Cursor
		}
		out := map[string]string{}
		for k, v := range f.files.Snapshot() {
			if strings.HasSuffix(k, ".ndjson") {
				out[k] = v
			}
		}
		return out, chunks
	}
	whole, one := run(0)
	parts, many := run(time.Nanosecond)
	if one != 1 || many < 3 {
		t.Fatalf("chunks: %d without a budget, %d with one; want 1 and several", one, many)
	}
	if len(whole) < 2 || len(parts) != len(whole) {
		t.Fatalf("%d files in one chunk, %d over %d chunks", len(whole), len(parts), many)
	}
	for k, v := range whole {
		if parts[k] != v {
			t.Errorf("%s differs when the unit resumed from its cursor", k)
		}
	}
}
