package export_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

func lines(typ string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"resourceType":%q,"id":"%s-%04d","meta":{"lastUpdated":"2025-01-01T00:00:00Z"}}`, typ, typ, i)
	}
	return out
}

type fixture struct {
	jobs  *exporttest.JobStore
	files *exporttest.FileStore
	steps *export.Steps
	clock time.Time
}

func newFixture(t *testing.T, src *exporttest.Source, cfg export.Config) *fixture {
	t.Helper()
	f := &fixture{jobs: exporttest.NewJobStore(), files: exporttest.NewFileStore(), clock: time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)}
	f.steps = export.NewSteps(f.jobs, f.files, src, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.steps.SetClock(func() time.Time { f.clock = f.clock.Add(time.Millisecond); return f.clock })
	err := f.jobs.Create(context.Background(), &export.Job{
		ID: "job1", Owner: "c", Status: export.StatusAccepted, TransactionTime: f.clock,
		Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON},
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runUnit calls ExportChunk until the unit is done and returns the calls.
func (f *fixture) runUnit(t *testing.T, u export.Unit) int {
	t.Helper()
	var cur *export.Cursor
	for calls := 1; calls < 1000; calls++ {
		res, err := f.steps.ExportChunk(context.Background(), export.ChunkInput{JobID: "job1", Unit: u, Cursor: cur})
		if err != nil {
			t.Fatalf("chunk %d: %v", calls, err)
		}
		if res.Done {
			return calls
		}
		cur = res.Cursor
	}
	t.Fatal("unit never finished")
	return 0
}

// units reads the plan object, as the runners do.
func units(t *testing.T, steps *export.Steps, plan *export.PlanResult) []export.Unit {
	t.Helper()
	us, err := steps.Units(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	return us
}

// outputLines concatenates the output objects of the fake store.
func outputLines(f *fixture) []string {
	var out []string
	snap := f.files.Snapshot()
	keys := make([]string, 0, len(snap))
	for k := range snap {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.Contains(k, "/errors.") || !strings.HasSuffix(k, ".ndjson") {
			continue
		}
		out = append(out, strings.Split(strings.TrimSuffix(snap[k], "\n"), "\n")...)
	}
	return out
}

func TestExportChunkIsIdempotentAndResumesExactlyOnce(t *testing.T) {
	tests := []struct {
		name      string
		cfg       export.Config
		n         int
		wantCalls int // > 1: the budget stopped the unit and it resumed
		wantFiles int
	}{
		{name: "one chunk one file", cfg: export.Config{}, n: 100, wantCalls: 1, wantFiles: 1},
		{name: "rolled by size", cfg: export.Config{MaxFileBytes: 1000}, n: 100, wantCalls: 1, wantFiles: 12},
		{name: "stopped by budget", cfg: export.Config{ChunkBudget: time.Nanosecond}, n: 2000, wantCalls: 4, wantFiles: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &exporttest.Source{Lines: map[string][]string{"Observation": lines("Observation", tc.n)}}
			f := newFixture(t, src, tc.cfg)
			ctx := context.Background()
			plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
			if err != nil || plan.Units != 1 {
				t.Fatalf("plan = %+v, %v", plan, err)
			}
			// The same first chunk twice writes the same objects.
			in := export.ChunkInput{JobID: "job1", Unit: units(t, f.steps, plan)[0]}
			r1, err := f.steps.ExportChunk(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			snap1 := f.files.Snapshot()
			r2, err := f.steps.ExportChunk(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(snap1) != fmt.Sprint(f.files.Snapshot()) || *r1.Cursor != *r2.Cursor {
				t.Fatalf("a retried chunk wrote different objects or cursor: %+v vs %+v", r1.Cursor, r2.Cursor)
			}
			if calls := f.runUnit(t, units(t, f.steps, plan)[0]); calls != tc.wantCalls {
				t.Errorf("chunks = %d, want %d", calls, tc.wantCalls)
			}
			if got := outputLines(f); strings.Join(got, "\n") != strings.Join(src.Lines["Observation"], "\n") {
				t.Fatalf("output has %d lines, want the %d source lines once, in order", len(got), tc.n)
			}
			res, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job1"})
			if err != nil {
				t.Fatal(err)
			}
			if res.Resources != int64(tc.n) || res.Files != tc.wantFiles {
				t.Errorf("finalize = %+v, want %d resources in %d files", res, tc.n, tc.wantFiles)
			}
			if again, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job1"}); err != nil || *again != *res {
				t.Errorf("second finalize = %+v, %v", again, err)
			}
		})
	}
}

func TestCommitFailureIsRetryableWithoutDuplicates(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 50)}}
	f := newFixture(t, src, export.Config{MaxFileBytes: 500})
	ctx := context.Background()
	plan, _ := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
	f.files.FailCommits = 1
	_, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: units(t, f.steps, plan)[0]})
	var re *export.RetryableError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want a RetryableError", err)
	}
	f.runUnit(t, units(t, f.steps, plan)[0]) // the runner's retry, same input
	if got := outputLines(f); len(got) != 50 {
		t.Errorf("output has %d lines after a failed attempt and a retry, want 50", len(got))
	}
}

func TestBadRecordsGoToErrorFiles(t *testing.T) {
	in := append(lines("Patient", 3), "not json", "also not json")
	in = append(in, lines("Patient", 5)[3:]...)
	src := &exporttest.Source{Lines: map[string][]string{"Patient": in}}
	f := newFixture(t, src, export.Config{})
	ctx := context.Background()
	plan, _ := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
	f.runUnit(t, units(t, f.steps, plan)[0])
	if _, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job1"}); err != nil {
		t.Fatal(err)
	}
	files, _ := f.jobs.Files(ctx, "job1")
	var errs, outs int64
	for _, fl := range files {
		switch fl.Kind {
		case export.KindError:
			errs += fl.Count
			if !strings.Contains(f.files.Snapshot()[fl.Key], `"resourceType":"OperationOutcome"`) {
				t.Errorf("error file is not OperationOutcomes: %s", f.files.Snapshot()[fl.Key])
			}
		case export.KindOutput:
			outs += fl.Count
		}
	}
	if errs != 2 || outs != 5 {
		t.Errorf("errors = %d, outputs = %d, want 2 and 5", errs, outs)
	}
}

func TestCancelledJobIsNeverResurrected(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 10)}}
	f := newFixture(t, src, export.Config{})
	ctx := context.Background()
	plan, _ := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
	f.runUnit(t, units(t, f.steps, plan)[0])
	if _, err := f.jobs.Transition(ctx, "job1", export.Transition{
		From: []export.Status{export.StatusInProgress}, To: export.StatusCancelled,
	}); err != nil {
		t.Fatal(err)
	}
	// A chunk still running when the cancel landed: its progress write is
	// refused and it removes the job's files.
	_, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: units(t, f.steps, plan)[0]})
	var nr *export.JobNotRunningError
	if !errors.As(err, &nr) {
		t.Fatalf("chunk after cancel: %v, want JobNotRunningError", err)
	}
	if _, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job1"}); !errors.As(err, &nr) {
		t.Errorf("finalize after cancel: %v", err)
	}
	if err := f.steps.Fail(ctx, export.FailInput{JobID: "job1", Error: "x"}); err != nil {
		t.Errorf("fail after cancel: %v", err)
	}
	if _, err := f.steps.Plan(ctx, export.JobRef{JobID: "job1"}); !errors.As(err, &nr) {
		t.Errorf("plan after cancel: %v", err)
	}
	j, _ := f.jobs.Get(ctx, "job1")
	if j.Status != export.StatusCancelled {
		t.Errorf("status = %s, want cancelled", j.Status)
	}
}

type nopRunner struct{ starts int }

func (r *nopRunner) Start(context.Context, string) error { r.starts++; return nil }
func (r *nopRunner) Stop(context.Context, string) error  { return nil }

func TestKickoffIsIdempotentPerKey(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}
	jobs := exporttest.NewJobStore()
	runner := &nopRunner{}
	svc := export.NewService(jobs, exporttest.NewFileStore(), runner, src, export.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	req := func() *bulkdata.Request {
		return &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}
	}
	a, err := svc.Kickoff(ctx, "c1", req(), "u", "req-1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := svc.Kickoff(ctx, "c1", req(), "u", "req-1")
	if err != nil || b.ID != a.ID {
		t.Fatalf("retried kick-off made job %v (%v), want %s", b, err, a.ID)
	}
	other, _ := svc.Kickoff(ctx, "c2", req(), "u", "req-1")
	fresh, _ := svc.Kickoff(ctx, "c1", req(), "u", "")
	if other.ID == a.ID || fresh.ID == a.ID {
		t.Errorf("jobs of another owner or without a key share an id")
	}
	if n, _ := jobs.CountLive(ctx, "c1"); n != 2 {
		t.Errorf("c1 has %d live jobs, want 2", n)
	}
}

func TestIncludeAssociatedData(t *testing.T) {
	src := &exporttest.Source{Lines: map[string][]string{
		"Observation": lines("Observation", 2),
		"Provenance": {
			`{"resourceType":"Provenance","id":"p-obs","target":[{"reference":"Observation/Observation-0001"}]}`,
			`{"resourceType":"Provenance","id":"p-org","target":[{"reference":"Organization/x"}]}`,
		},
	}}
	cases := []struct {
		name    string
		codes   []string
		lenient bool
		err     string
		want    []string // Provenance ids exported
	}{
		{"relevant", []string{bulkdata.RelevantProvenanceResources}, false, "", []string{"p-obs"}},
		{"custom alias", []string{"_relevantProvenance"}, false, "", []string{"p-obs"}},
		{"least restrictive wins", []string{bulkdata.LatestProvenanceResources, bulkdata.RelevantProvenanceResources}, false, "", []string{"p-obs"}},
		{"latest alone", []string{bulkdata.LatestProvenanceResources}, false, "LatestProvenanceResources", nil},
		{"latest alone, lenient", []string{bulkdata.LatestProvenanceResources}, true, "", nil},
		{"other custom code", []string{"_mine"}, false, "_mine", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			jobs, files := exporttest.NewJobStore(), exporttest.NewFileStore()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			svc := export.NewService(jobs, files, &nopRunner{}, src, export.Config{}, log)
			ctx := context.Background()
			req := &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON,
				Types: []string{"Observation"}, IncludeAssociatedData: tc.codes, Lenient: tc.lenient}
			job, err := svc.Kickoff(ctx, "c", req, "u", "")
			if tc.err != "" {
				if err == nil || !strings.Contains(fmt.Sprint(err), tc.err) {
					t.Fatalf("err = %v, want one about %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			steps := export.NewSteps(jobs, files, src, export.Config{}, log)
			plan, err := steps.Plan(ctx, export.JobRef{JobID: job.ID})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range units(t, steps, plan) {
				if _, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: job.ID, Unit: u}); err != nil {
					t.Fatal(err)
				}
			}
			for k, v := range files.Snapshot() {
				if strings.Contains(k, "/Provenance.") {
					for _, line := range strings.Split(strings.TrimSpace(v), "\n") {
						var r struct{ ID string }
						json.Unmarshal([]byte(line), &r)
						got = append(got, r.ID)
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("Provenance exported = %v, want %v", got, tc.want)
			}
		})
	}
}

// countingSource counts Group reads and the patients each Open is asked for.
type countingSource struct {
	*exporttest.Source
	groupReads int
	opened     [][]string
}

func (c *countingSource) GroupMembers(ctx context.Context, id string) ([]string, error) {
	c.groupReads++
	return c.Source.GroupMembers(ctx, id)
}

func (c *countingSource) Open(ctx context.Context, q export.Query, t, seg, cur string) (export.Reader, error) {
	c.opened = append(c.opened, q.Patients)
	return c.Source.Open(ctx, q, t, seg, cur)
}

func (c *countingSource) PatientBatch() int { return 3 }

// TestPlanResolvesGroupOnceIntoStoredBatches: Plan reads the Group once,
// stores sorted patient batches of the source's size and a plan object of
// type × batch units; chunks read their batch, never the Group.
func TestPlanResolvesGroupOnceIntoStoredBatches(t *testing.T) {
	ctx := context.Background()
	members := []string{"p7", "p1", "p3", "p2", "p9", "p4", "p8"}
	src := &countingSource{Source: &exporttest.Source{
		Lines:  map[string][]string{"Observation": lines("Observation", 3), "Patient": lines("Patient", 3), "Organization": lines("Organization", 1)},
		Groups: map[string][]string{"g": members},
	}}
	f := newFixture(t, nil, export.Config{})
	f.steps = export.NewSteps(f.jobs, f.files, src, export.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.jobs.Create(ctx, &export.Job{ID: "g1", Owner: "c", Status: export.StatusAccepted, TransactionTime: f.clock,
		Request: bulkdata.Request{Level: bulkdata.LevelGroup, GroupID: "g", Patients: []string{"p9", "p1", "p2", "p3", "p4", "p8", "nope"}}})
	plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	us := units(t, f.steps, plan)
	// Members ∩ request = p1 p2 p3 p4 p8 p9: two batches of 3, for the two
	// compartment types with data (not Organization).
	if plan.Units != 4 || len(us) != 4 || src.groupReads != 1 {
		t.Fatalf("plan = %+v %+v after %d Group reads; want 4 units from one read", plan, us, src.groupReads)
	}
	job, _ := f.jobs.Get(ctx, "g1")
	if job.Plan == nil || job.Plan.Key != plan.PlanKey || job.Plan.Units != 4 {
		t.Errorf("job plan = %+v", job.Plan)
	}
	for _, u := range us {
		if _, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "g1", Unit: u}); err != nil {
			t.Fatal(err)
		}
	}
	got := fmt.Sprint(src.opened)
	if want := "[[p1 p2 p3] [p4 p8 p9] [p1 p2 p3] [p4 p8 p9]]"; got != want || src.groupReads != 1 {
		t.Errorf("chunks opened with %s after %d Group reads, want %s and 1", got, src.groupReads, want)
	}
}

// TestRetryableErrorWrapsItsCause: errors.Is and errors.As see through it.
func TestRetryableErrorWrapsItsCause(t *testing.T) {
	cause := &exporttestCause{}
	var err error = &export.RetryableError{Msg: "read source", Err: fmt.Errorf("page 3: %w", cause)}
	var c *exporttestCause
	if !errors.As(err, &c) || !errors.Is(err, cause) || err.Error() != "read source: page 3: upstream 503" {
		t.Errorf("RetryableError %q does not wrap its cause", err)
	}
}

type exporttestCause struct{}

func (*exporttestCause) Error() string { return "upstream 503" }

// TestFinalizeCountsAHundredThousandFiles: Finalize reads the file and
// progress records (not the job record) and completes a job of 100,000
// files.
func TestFinalizeCountsAHundredThousandFiles(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, &exporttest.Source{}, export.Config{})
	const units, filesPerUnit = 1000, 100
	if _, err := f.jobs.Transition(ctx, "job1", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress,
		Plan: &export.PlanRef{Key: export.PlanKey("job1"), Units: units}}); err != nil {
		t.Fatal(err)
	}
	for u := 0; u < units; u++ {
		id := fmt.Sprintf("Observation.%04d", u)
		for i := 0; i < filesPerUnit; i++ {
			f.jobs.PutFile(ctx, "job1", export.File{Key: export.FileKey("job1", id, "Observation", i), Kind: export.KindOutput, Type: "Observation", Count: 2, Bytes: 10, Unit: id, Seq: i})
		}
		done := u != units-1 // the last unit is not done yet
		f.jobs.SaveProgress(ctx, "job1", id, export.UnitProgress{Resources: 2 * filesPerUnit, Done: done})
	}
	if _, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job1"}); err == nil || !strings.Contains(err.Error(), "999 of 1000 units") {
		t.Fatalf("finalize with a unit not done = %v, want an error", err)
	}
	f.jobs.SaveProgress(ctx, "job1", fmt.Sprintf("Observation.%04d", units-1), export.UnitProgress{Resources: 2 * filesPerUnit, Done: true})
	res, err := f.steps.Finalize(ctx, export.JobRef{JobID: "job1"})
	if err != nil || res.Files != units*filesPerUnit || res.Resources != 2*units*filesPerUnit {
		t.Fatalf("finalize = %+v, %v; want %d files", res, err, units*filesPerUnit)
	}
	if j, _ := f.jobs.Get(ctx, "job1"); j.Status != export.StatusCompleted {
		t.Errorf("status = %s", j.Status)
	}
}

// longCursorSource is a Source whose positions are 10 KB long.
type longCursorSource struct{ *exporttest.Source }

var cursorPad = strings.Repeat("p", 10000)

func (l longCursorSource) Open(ctx context.Context, q export.Query, t, seg, cur string) (export.Reader, error) {
	if cur != "" {
		if !strings.HasPrefix(cur, cursorPad) {
			return nil, fmt.Errorf("cursor lost its padding: %.40q", cur)
		}
		cur = strings.TrimPrefix(cur, cursorPad)
	}
	r, err := l.Source.Open(ctx, q, t, seg, cur)
	return longCursorReader{r}, err
}

type longCursorReader struct{ export.Reader }

func (r longCursorReader) Cursor() string { return cursorPad + r.Reader.Cursor() }

// TestLongCursorsGoByReference: a source position over 2 KiB is stored as
// an object and the chunk's result carries only its key, and the unit
// still resumes exactly.
func TestLongCursorsGoByReference(t *testing.T) {
	ctx := context.Background()
	src := longCursorSource{&exporttest.Source{Lines: map[string][]string{"Observation": lines("Observation", 2000)}}}
	f := newFixture(t, nil, export.Config{ChunkBudget: time.Nanosecond})
	f.steps = export.NewSteps(f.jobs, f.files, src, export.Config{ChunkBudget: time.Nanosecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.steps.SetClock(func() time.Time { f.clock = f.clock.Add(time.Millisecond); return f.clock })
	plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
	if err != nil {
		t.Fatal(err)
	}
	u := units(t, f.steps, plan)[0]
	var cur *export.Cursor
	chunks := 0
	for ; chunks < 100; chunks++ {
		res, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: u, Cursor: cur})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(res); len(b) > 1024 {
			t.Fatalf("chunk result of %d bytes carries the long cursor: %.200s", len(b), b)
		}
		if res.Done {
			break
		}
		if res.Cursor.SourceRef == "" || res.Cursor.Source != "" {
			t.Fatalf("cursor = %+v, want a reference", res.Cursor)
		}
		cur = res.Cursor
	}
	if chunks < 2 {
		t.Fatalf("%d chunks; the budget should have split the unit", chunks)
	}
	if got := outputLines(f); strings.Join(got, "\n") != strings.Join(src.Lines["Observation"], "\n") {
		t.Fatalf("output has %d lines, want the %d source lines once, in order", len(got), 2000)
	}
}

// compartmentSource is a fake Source that, like the real ones, returns for
// a patient list only the resources in those patients' compartments.
type compartmentSource struct{ *exporttest.Source }

func (c compartmentSource) PatientBatch() int { return 2 }

func (c compartmentSource) Open(ctx context.Context, q export.Query, t, seg, cur string) (export.Reader, error) {
	want := map[string]bool{}
	for _, p := range q.Patients {
		want[p] = true
	}
	var kept []string
	for _, line := range c.Lines[t] {
		in := false
		fhir.CompartmentPatients(t, []byte(line), func(id string) bool { in = in || want[id]; return !in })
		if in {
			kept = append(kept, line)
		}
	}
	return (&exporttest.Source{Lines: map[string][]string{t: kept}}).Open(ctx, q, t, seg, cur)
}

// TestResourcesOfSeveralBatchesAreExportedOnce: a resource in the
// compartments of patients in several batches (the Group itself, a shared
// Encounter) is exported by the batch of its first selected patient only;
// one that references a non-member before the batch is still exported.
func TestResourcesOfSeveralBatchesAreExportedOnce(t *testing.T) {
	ctx := context.Background()
	src := compartmentSource{&exporttest.Source{
		Lines: map[string][]string{
			"Patient": {`{"resourceType":"Patient","id":"p1"}`, `{"resourceType":"Patient","id":"p3"}`, `{"resourceType":"Patient","id":"p5"}`, `{"resourceType":"Patient","id":"p7"}`},
			"Group":   {`{"resourceType":"Group","id":"g","member":[{"entity":{"reference":"Patient/p1"}},{"entity":{"reference":"Patient/p3"}},{"entity":{"reference":"Patient/p5"}},{"entity":{"reference":"Patient/p7"}}]}`},
			"Encounter": {
				`{"resourceType":"Encounter","id":"shared","subject":{"reference":"Patient/p5"},"participant":[{"individual":{"reference":"Patient/p3"}}]}`,
				`{"resourceType":"Encounter","id":"outsider","subject":{"reference":"Patient/p5"},"participant":[{"individual":{"reference":"Patient/p0"}}]}`,
				`{"resourceType":"Encounter","id":"own","subject":{"reference":"Patient/p7"}}`,
			},
		},
		Groups: map[string][]string{"g": {"p1", "p3", "p5", "p7"}},
	}}
	f := newFixture(t, nil, export.Config{})
	f.steps = export.NewSteps(f.jobs, f.files, src, export.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	f.jobs.Create(ctx, &export.Job{ID: "g1", Owner: "c", Status: export.StatusAccepted, TransactionTime: f.clock,
		Request: bulkdata.Request{Level: bulkdata.LevelGroup, GroupID: "g"}})
	plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "g1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units(t, f.steps, plan) {
		if _, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "g1", Unit: u}); err != nil {
			t.Fatal(err)
		}
	}
	count := map[string]int{}
	for _, line := range outputLines(f) {
		var r struct{ ResourceType, ID string }
		json.Unmarshal([]byte(line), &r)
		count[r.ResourceType+"/"+r.ID]++
	}
	want := map[string]int{"Patient/p1": 1, "Patient/p3": 1, "Patient/p5": 1, "Patient/p7": 1, "Group/g": 1,
		"Encounter/shared": 1, "Encounter/outsider": 1, "Encounter/own": 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("exported %v, want each once: %v", count, want)
	}
}

// TestLargeResourcesStopAtTheBudget: with resources of 2 MiB the clock is
// read after each one, not every 512, so a chunk stops at its budget
// however large its resources are.
func TestLargeResourcesStopAtTheBudget(t *testing.T) {
	big := make([]string, 40)
	pad := strings.Repeat("x", 2<<20)
	for i := range big {
		big[i] = fmt.Sprintf(`{"resourceType":"Binary","id":"b%02d","data":%q}`, i, pad)
	}
	src := &exporttest.Source{Lines: map[string][]string{"Binary": big}}
	f := newFixture(t, src, export.Config{ChunkBudget: time.Nanosecond, MaxFileBytes: 1 << 30})
	ctx := context.Background()
	plan, err := f.steps.Plan(ctx, export.JobRef{JobID: "job1"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := f.steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: units(t, f.steps, plan)[0]})
	if err != nil {
		t.Fatal(err)
	}
	if res.Done || res.Cursor.Resources != 1 {
		t.Errorf("first chunk: done %v after %d resources; want it stopped after 1", res.Done, res.Cursor.Resources)
	}
	if calls := f.runUnit(t, units(t, f.steps, plan)[0]); calls != 41 {
		t.Errorf("%d chunks for 40 resources of 2 MiB, want 41 (one each, then the end)", calls)
	}
}

// changingSource fails reads with a SourceChangedError: at Open, or after
// `after` resources of a segment.
type changingSource struct {
	*exporttest.Source
	atOpen bool
	after  int
}

func (s *changingSource) Open(ctx context.Context, q export.Query, t, seg, cursor string) (export.Reader, error) {
	if s.atOpen {
		return nil, &export.SourceChangedError{Object: "Patient.ndjson", Reason: "size changed"}
	}
	r, err := s.Source.Open(ctx, q, t, seg, cursor)
	return &changingReader{Reader: r, left: s.after}, err
}

type changingReader struct {
	export.Reader
	left int
}

func (r *changingReader) Next() ([]byte, error) {
	if r.left == 0 {
		return nil, &export.SourceChangedError{Object: "Patient.ndjson", Reason: "size changed"}
	}
	r.left--
	return r.Reader.Next()
}

// TestSourceChangedEndsTheUnitWithAnOutcome: a source object that changed
// after Plan ends its unit, keeps what was read before, and names the file
// in an error record; no retry loop, no silent loss.
func TestSourceChangedEndsTheUnitWithAnOutcome(t *testing.T) {
	for _, tc := range []struct {
		name   string
		src    *changingSource
		output int
	}{
		{"at open", &changingSource{atOpen: true}, 0},
		{"while reading", &changingSource{after: 3}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.src.Source = &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 10)}}
			f := newFixture(t, tc.src.Source, export.Config{})
			f.steps = export.NewSteps(f.jobs, f.files, tc.src, export.Config{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
			plan, err := f.steps.Plan(context.Background(), export.JobRef{JobID: "job1"})
			if err != nil {
				t.Fatal(err)
			}
			if calls := f.runUnit(t, units(t, f.steps, plan)[0]); calls != 1 {
				t.Errorf("%d calls, want 1", calls)
			}
			if got := len(outputLines(f)); got != tc.output {
				t.Errorf("%d resources written, want %d", got, tc.output)
			}
			var errs string
			for k, v := range f.files.Snapshot() {
				if strings.Contains(k, "/errors.") {
					errs += v
				}
			}
			if !strings.Contains(errs, "Patient.ndjson") || !strings.Contains(errs, `"conflict"`) {
				t.Errorf("error records = %q, want a conflict naming Patient.ndjson", errs)
			}
		})
	}
}

// diskFullStore refuses writes while the job's files are still on disk, as
// a job store on a filesystem those files have filled would.
type diskFullStore struct {
	*exporttest.JobStore
	files *exporttest.FileStore
}

func (s *diskFullStore) full() bool {
	for k := range s.files.Snapshot() {
		if strings.HasPrefix(k, "job1/") {
			return true
		}
	}
	return false
}

func (s *diskFullStore) Transition(ctx context.Context, id string, t export.Transition) (*export.Job, error) {
	if s.full() {
		return nil, errors.New("write jobs.db: no space left on device")
	}
	return s.JobStore.Transition(ctx, id, t)
}

// TestCancelAndFailFreeSpaceFirstWhenTheStoreIsFull: on a full disk,
// DELETE and the Fail step still succeed, by removing the job's files
// before recording the change.
func TestCancelAndFailFreeSpaceFirstWhenTheStoreIsFull(t *testing.T) {
	for _, op := range []string{"cancel", "fail"} {
		t.Run(op, func(t *testing.T) {
			files := exporttest.NewFileStore()
			jobs := &diskFullStore{JobStore: exporttest.NewJobStore(), files: files}
			now := time.Now().UTC()
			if err := jobs.Create(context.Background(), &export.Job{ID: "job1", Owner: "c", Status: export.StatusInProgress,
				CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			w, _ := files.Create(context.Background(), "job1/Patient.0000/Patient.0000.ndjson")
			w.Write([]byte("{}\n"))
			w.Commit()
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			var err error
			want := export.StatusCancelled
			if op == "cancel" {
				svc := export.NewService(jobs, files, &nopRunner{}, &exporttest.Source{}, export.Config{}, quiet)
				err = svc.Cancel(context.Background(), "c", "job1")
			} else {
				want = export.StatusFailed
				err = export.NewSteps(jobs, files, &exporttest.Source{}, export.Config{}, quiet).Fail(context.Background(), export.FailInput{JobID: "job1"})
			}
			if err != nil {
				t.Fatalf("%s on a full store: %v", op, err)
			}
			if j, _ := jobs.Get(context.Background(), "job1"); j.Status != want {
				t.Errorf("status = %s, want %s", j.Status, want)
			}
		})
	}
}
