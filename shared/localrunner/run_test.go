package localrunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/retry"
)

// fast is a retry policy with the state machine's shape and microsecond
// waits.
var fast = retry.Policy{Interval: time.Microsecond, BackoffRate: 2, MaxAttempts: 3, Jitter: true}

// watchedStore is the fake job store that reports, on channels, every job
// that reached a terminal status and every Get (a step looked at a job), so
// tests wait on those events instead of polling.
type watchedStore struct {
	*exporttest.JobStore
	ended chan *export.Job
	gets  chan string
}

func newWatchedStore() *watchedStore {
	return &watchedStore{JobStore: exporttest.NewJobStore(), ended: make(chan *export.Job, 64), gets: make(chan string, 1024)}
}

func (s *watchedStore) Transition(ctx context.Context, id string, t export.Transition) (*export.Job, error) {
	j, err := s.JobStore.Transition(ctx, id, t)
	if err == nil && !j.Status.Live() {
		s.ended <- j
	}
	return j, err
}

func (s *watchedStore) Get(ctx context.Context, id string) (*export.Job, error) {
	select {
	case s.gets <- id:
	default:
	}
	return s.JobStore.Get(ctx, id)
}

// waitEnded returns the next job to reach a terminal status.
func (s *watchedStore) waitEnded(t *testing.T) *export.Job {
	t.Helper()
	select {
	case j := <-s.ended:
		return j
	case <-time.After(time.Minute): // a safety net; the test waits on the event
		t.Fatal("no job reached a terminal status")
		return nil
	}
}

func (s *watchedStore) add(t *testing.T, id string, status export.Status) {
	t.Helper()
	now := time.Now().UTC()
	err := s.Create(context.Background(), &export.Job{ID: id, Owner: "c", Status: status, TransactionTime: now,
		Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
}

func lines(typ string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"resourceType":%q,"id":"%s-%03d","meta":{"lastUpdated":"2025-01-01T00:00:00Z"}}`, typ, typ, i)
	}
	return out
}

// why is a failed job's outcome, for messages.
func why(j *export.Job) string {
	if j.Outcome == nil {
		return "no outcome"
	}
	b, _ := json.Marshal(j.Outcome)
	return string(b)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// countingSource counts calls and can fail Types the first failTypes times
// or hold every Open until release is closed (or the context ends).
type countingSource struct {
	*exporttest.Source
	failTypes   int32
	typesCalls  atomic.Int32
	opens       sync.Map // type → *atomic.Int32
	entered     chan string
	release     chan struct{}
	active, top atomic.Int32
}

func (s *countingSource) Types(ctx context.Context) ([]string, error) {
	if s.typesCalls.Add(1) <= s.failTypes {
		return nil, errors.New("source briefly unavailable")
	}
	return s.Source.Types(ctx)
}

func (s *countingSource) Open(ctx context.Context, q export.Query, typ, seg, cursor string) (export.Reader, error) {
	n, _ := s.opens.LoadOrStore(typ, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	if s.release != nil {
		a := s.active.Add(1)
		defer s.active.Add(-1)
		for {
			top := s.top.Load()
			if a <= top || s.top.CompareAndSwap(top, a) {
				break
			}
		}
		s.entered <- typ
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Source.Open(ctx, q, typ, seg, cursor)
}

func (s *countingSource) openCount(typ string) int32 {
	n, ok := s.opens.Load(typ)
	if !ok {
		return 0
	}
	return n.(*atomic.Int32).Load()
}

// exported counts the resources in the job's committed output files, by
// type, from the file store itself.
func exported(t *testing.T, jobs export.JobStore, files *exporttest.FileStore, id string) map[string]int {
	t.Helper()
	fs, err := jobs.Files(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, f := range fs {
		if f.Kind == export.KindOutput {
			got[f.Type] += bytes.Count(files.Objects[f.Key], []byte("\n"))
		}
	}
	return got
}

// TestRunsJobsToTheEnd: Plan, every unit's cursor loop (a 1 ns chunk
// budget makes many chunks) and Finalize; the job completes with every
// resource once.
func TestRunsJobsToTheEnd(t *testing.T) {
	jobs, files := newWatchedStore(), exporttest.NewFileStore()
	src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 40), "Observation": lines("Observation", 2000)}}}
	steps := export.NewSteps(jobs, files, src, export.Config{ChunkBudget: time.Nanosecond}, quiet)
	r := New(steps, jobs, Options{Retry: fast}, quiet)
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	jobs.add(t, "j", export.StatusAccepted)
	if err := r.Start(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
	j := jobs.waitEnded(t)
	if j.ID != "j" || j.Status != export.StatusCompleted {
		t.Fatalf("job %s ended %s (%s), want j completed", j.ID, j.Status, why(j))
	}
	got := exported(t, jobs, files, "j")
	if got["Patient"] != 40 || got["Observation"] != 2000 {
		t.Errorf("exported %v, want Patient 40, Observation 2000", got)
	}
	if n := src.openCount("Observation"); n < 2 {
		t.Errorf("Observation opened %d times: the cursor loop did not run", n)
	}
}

// TestRetriesStepsWithThePolicy: a RetryableError is retried as often as the
// policy says, then the job fails; a job whose step recovers in time
// completes.
func TestRetriesStepsWithThePolicy(t *testing.T) {
	tests := []struct {
		name        string
		failures    int32
		attempts    int
		wantStatus  export.Status
		wantTypesAt int32 // calls of Types
	}{
		{"recovers within the retries", 2, 3, export.StatusCompleted, 3},
		{"recovers on the last retry", 3, 3, export.StatusCompleted, 4},
		{"retries run out", 5, 2, export.StatusFailed, 3},
		{"no retries", 1, 0, export.StatusFailed, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jobs, files := newWatchedStore(), exporttest.NewFileStore()
			src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 3)}}, failTypes: tc.failures}
			steps := export.NewSteps(jobs, files, src, export.Config{}, quiet)
			p := fast
			p.MaxAttempts = tc.attempts
			r := New(steps, jobs, Options{Retry: p}, quiet)
			t.Cleanup(func() { r.Shutdown(context.Background()) })
			jobs.add(t, "j", export.StatusAccepted)
			if err := r.Start(context.Background(), "j"); err != nil {
				t.Fatal(err)
			}
			j := jobs.waitEnded(t)
			if j.Status != tc.wantStatus {
				t.Errorf("job ended %s (%s), want %s", j.Status, why(j), tc.wantStatus)
			}
			if n := src.typesCalls.Load(); n != tc.wantTypesAt {
				t.Errorf("Types called %d times, want %d", n, tc.wantTypesAt)
			}
		})
	}
}

// TestDefaultRetryIsTheStateMachines: without options the runner retries
// steps with retry.Step, the numbers the state machine's definition uses.
func TestDefaultRetryIsTheStateMachines(t *testing.T) {
	r := New(nil, nil, Options{}, quiet)
	defer r.Shutdown(context.Background())
	if r.opts.Retry != retry.Step {
		t.Errorf("default retry %+v, want retry.Step %+v", r.opts.Retry, retry.Step)
	}
	if r.opts.FailRetry.Interval != retry.MarkFailed.Interval || r.opts.FailRetry.MaxDelay != 30*time.Second {
		t.Errorf("default fail retry %+v, want retry.MarkFailed capped at 30s", r.opts.FailRetry)
	}
	if r.opts.MaxJobs != 4 || r.opts.UnitWorkers != 4 {
		t.Errorf("default pool %d jobs × %d units, want 4 × 4", r.opts.MaxJobs, r.opts.UnitWorkers)
	}
}

// TestResumesFromSavedProgress: units saved as done are not exported
// again; the others are, and the job completes.
func TestResumesFromSavedProgress(t *testing.T) {
	ctx := context.Background()
	jobs, files := newWatchedStore(), exporttest.NewFileStore()
	src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 5), "Observation": lines("Observation", 5)}}}
	steps := export.NewSteps(jobs, files, src, export.Config{}, quiet)
	jobs.add(t, "j", export.StatusAccepted)
	// A run that planned and finished Patient before the process stopped.
	plan, err := steps.Plan(ctx, export.JobRef{JobID: "j"})
	if err != nil {
		t.Fatal(err)
	}
	units, err := steps.Units(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range units {
		if u.Type == "Patient" {
			if _, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: "j", Unit: u}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := src.openCount("Patient"); n != 1 {
		t.Fatalf("Patient opened %d times before the restart, want 1", n)
	}
	r := New(steps, jobs, Options{Retry: fast}, quiet)
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	if err := r.Start(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	if j := jobs.waitEnded(t); j.Status != export.StatusCompleted {
		t.Fatalf("job ended %s (%s), want completed", j.Status, why(j))
	}
	if n := src.openCount("Patient"); n != 1 {
		t.Errorf("Patient opened %d times in all: the done unit was exported again", n)
	}
	if n := src.openCount("Observation"); n != 1 {
		t.Errorf("Observation opened %d times, want 1", n)
	}
	if got := exported(t, jobs, files, "j"); got["Patient"] != 5 || got["Observation"] != 5 {
		t.Errorf("exported %v, want 5 of each", got)
	}
}

// TestStopEndsTheRunQuietly: Stop cancels a running job's work and returns
// when it has ended; the runner does not mark a stopped job failed (the
// service moved it to cancelled), and stopping a job it does not run is a
// no-op.
func TestStopEndsTheRunQuietly(t *testing.T) {
	ctx := context.Background()
	jobs, files := newWatchedStore(), exporttest.NewFileStore()
	src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 5)}},
		entered: make(chan string, 8), release: make(chan struct{})}
	steps := export.NewSteps(jobs, files, src, export.Config{}, quiet)
	r := New(steps, jobs, Options{Retry: fast}, quiet)
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	jobs.add(t, "j", export.StatusAccepted)
	if err := r.Start(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx, "j"); err != nil { // a retried kick-off
		t.Fatal(err)
	}
	<-src.entered
	if err := r.Stop(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Get(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != export.StatusInProgress {
		t.Errorf("stopped job is %s, want still in-progress (the runner must not fail it)", j.Status)
	}
	if n := src.typesCalls.Load(); n != 1 {
		t.Errorf("Types called %d times: starting a running job twice ran it twice", n)
	}
	if err := r.Stop(ctx, "unknown"); err != nil {
		t.Errorf("Stop of a job not running = %v, want nil", err)
	}
	// Started again, the stopped job resumes and completes.
	if err := r.Start(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	<-src.entered
	close(src.release)
	if j := jobs.waitEnded(t); j.Status != export.StatusCompleted {
		t.Errorf("resumed job ended %s (%s), want completed", j.Status, why(j))
	}
}

// TestJobNotRunningIsNotFailed: a job cancelled before its run starts ends
// the run without a failure being recorded.
func TestJobNotRunningIsNotFailed(t *testing.T) {
	ctx := context.Background()
	jobs, files := newWatchedStore(), exporttest.NewFileStore()
	steps := export.NewSteps(jobs, files, &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}, export.Config{}, quiet)
	r := New(steps, jobs, Options{Retry: fast}, quiet)
	jobs.add(t, "j", export.StatusCancelled)
	if err := r.Start(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	<-jobs.gets // Plan read the job
	r.mu.Lock()
	rn := r.running["j"]
	r.mu.Unlock()
	if rn != nil {
		<-rn.done
	}
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Get(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != export.StatusCancelled || j.Outcome != nil {
		t.Errorf("job is %s (%q), want cancelled with no error", j.Status, why(j))
	}
	select {
	case j := <-jobs.ended:
		t.Errorf("job %s was moved to %s", j.ID, j.Status)
	default:
	}
}

// TestMaxJobsRunAtOnce: with MaxJobs 2 and three jobs whose exports block,
// two export at once and the third waits for a slot; all complete.
func TestMaxJobsRunAtOnce(t *testing.T) {
	ctx := context.Background()
	jobs, files := newWatchedStore(), exporttest.NewFileStore()
	src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 2)}},
		entered: make(chan string, 8), release: make(chan struct{})}
	steps := export.NewSteps(jobs, files, src, export.Config{}, quiet)
	r := New(steps, jobs, Options{MaxJobs: 2, Retry: fast}, quiet)
	t.Cleanup(func() { r.Shutdown(context.Background()) })
	for i := range 3 {
		id := fmt.Sprintf("j%d", i)
		jobs.add(t, id, export.StatusAccepted)
		if err := r.Start(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	<-src.entered
	<-src.entered
	if a := src.active.Load(); a != 2 {
		t.Errorf("%d jobs exporting while two are blocked, want 2", a)
	}
	if n := len(r.slots); n != 2 {
		t.Errorf("%d slots taken, want 2", n)
	}
	close(src.release)
	for range 3 {
		if j := jobs.waitEnded(t); j.Status != export.StatusCompleted {
			t.Errorf("job %s ended %s (%s)", j.ID, j.Status, why(j))
		}
	}
	if top := src.top.Load(); top != 2 {
		t.Errorf("at most %d jobs exported at once, want 2 (MaxJobs)", top)
	}
}

// TestShutdownLeavesJobsLive: a shutdown stops running jobs without
// failing them (they resume on the next start) and refuses new ones.
func TestShutdownLeavesJobsLive(t *testing.T) {
	ctx := context.Background()
	jobs, files := newWatchedStore(), exporttest.NewFileStore()
	src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 2)}},
		entered: make(chan string, 8), release: make(chan struct{})}
	steps := export.NewSteps(jobs, files, src, export.Config{}, quiet)
	r := New(steps, jobs, Options{Retry: fast}, quiet)
	jobs.add(t, "j", export.StatusAccepted)
	if err := r.Start(ctx, "j"); err != nil {
		t.Fatal(err)
	}
	<-src.entered
	if err := r.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Get(ctx, "j")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != export.StatusInProgress {
		t.Errorf("after shutdown the job is %s, want in-progress (to resume)", j.Status)
	}
	if err := r.Start(ctx, "k"); err == nil {
		t.Error("Start after Shutdown succeeded, want an error")
	}
	// A shutdown that cannot wait long enough reports its context's end.
	r2 := New(steps, jobs, Options{Retry: fast}, quiet)
	jobs.add(t, "k", export.StatusAccepted)
	if err := r2.Start(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	<-src.entered
	expired, cancel := context.WithCancel(ctx)
	cancel()
	_ = r2.Shutdown(expired) // may or may not have finished: either is allowed
	if err := r2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}
