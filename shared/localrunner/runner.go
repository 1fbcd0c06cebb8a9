// Package localrunner is the embedded Runner: it runs a job's steps
// (Plan → ExportChunk per unit until done → Finalize, Fail on error) in a
// bounded pool of goroutines, with the same retry rule the state machine
// applies: a RetryableError is retried with backoff, anything else fails
// the job. Progress is saved by the steps, so a job stopped by a shutdown
// resumes from its last cursor when started again.
package localrunner

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// Steps are the export steps the runner calls (*export.Steps, or a wrapper
// that records metrics around them).
type Steps interface {
	Plan(ctx context.Context, in export.JobRef) (*export.PlanResult, error)
	Units(ctx context.Context, plan *export.PlanResult) ([]export.Unit, error)
	ExportChunk(ctx context.Context, in export.ChunkInput) (*export.ChunkResult, error)
	Finalize(ctx context.Context, in export.JobRef) (*export.FinalizeResult, error)
	Fail(ctx context.Context, in export.FailInput) error
}

// JobReader is what the runner reads to resume units.
type JobReader interface {
	Progress(ctx context.Context, id string) (map[string]export.UnitProgress, error)
}

// Options tune the pool.
type Options struct {
	// MaxJobs runs at most this many jobs at once; others wait in order.
	MaxJobs int
	// UnitWorkers exports at most this many units of one job at once (the
	// state machine's Map MaxConcurrency).
	UnitWorkers int
	// Retries and Backoff bound retries of a RetryableError.
	Retries int
	Backoff time.Duration
	// OnDone, when set, is called after a job's run ended and freed its
	// place (completed, failed or stopped by a cancel), not when the
	// runner shuts down: the embedded server dispatches the next queued
	// job from it.
	OnDone func(jobID string)
}

// Runner is an export.Runner on goroutines.
type Runner struct {
	steps Steps
	jobs  JobReader
	opts  Options
	log   *slog.Logger

	slots   chan struct{}
	base    context.Context
	stopAll context.CancelFunc

	mu      sync.Mutex
	running map[string]*run
	wg      sync.WaitGroup
}

type run struct {
	cancel context.CancelFunc
	done   chan struct{}
}

var _ export.Runner = (*Runner)(nil)

// New returns a runner over the steps.
func New(steps Steps, jobs JobReader, opts Options, log *slog.Logger) *Runner {
	if opts.MaxJobs <= 0 {
		opts.MaxJobs = 4
	}
	if opts.UnitWorkers <= 0 {
		opts.UnitWorkers = 4
	}
	if opts.Retries <= 0 {
		opts.Retries = 3
	}
	if opts.Backoff <= 0 {
		opts.Backoff = time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	base, cancel := context.WithCancel(context.Background())
	return &Runner{steps: steps, jobs: jobs, opts: opts, log: log, slots: make(chan struct{}, opts.MaxJobs),
		base: base, stopAll: cancel, running: map[string]*run{}}
}

// Start implements export.Runner: the job runs in the background.
func (r *Runner) Start(_ context.Context, jobID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base.Err() != nil {
		return errors.New("runner is shut down")
	}
	if _, ok := r.running[jobID]; ok {
		return nil
	}
	ctx, cancel := context.WithCancel(r.base)
	rn := &run{cancel: cancel, done: make(chan struct{})}
	r.running[jobID] = rn
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(rn.done)
		defer func() {
			r.mu.Lock()
			delete(r.running, jobID)
			r.mu.Unlock()
			cancel()
		}()
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-r.slots }()
		r.runJob(ctx, jobID)
		if r.opts.OnDone != nil && r.base.Err() == nil {
			// The job's store record is terminal by now, so its
			// running place is free; the pool slot follows at once.
			r.opts.OnDone(jobID)
		}
	}()
	return nil
}

// Stop implements export.Runner: it cancels the job's work and waits for it
// to end (or for ctx).
func (r *Runner) Stop(ctx context.Context, jobID string) error {
	r.mu.Lock()
	rn, ok := r.running[jobID]
	r.mu.Unlock()
	if !ok {
		return nil
	}
	rn.cancel()
	select {
	case <-rn.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown stops every job, leaving them live so they resume on the next
// start, and waits for the goroutines (or ctx).
func (r *Runner) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	r.stopAll()
	r.mu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Runner) runJob(ctx context.Context, jobID string) {
	log := r.log.With("job", jobID)
	plan, err := retry(ctx, r.opts, func() (*export.PlanResult, error) {
		return r.steps.Plan(ctx, export.JobRef{JobID: jobID})
	})
	if err != nil {
		r.fail(ctx, jobID, "plan", err)
		return
	}
	// The plan object is this runner's ItemReader, as it is the
	// Distributed Map's on AWS.
	units, err := retry(ctx, r.opts, func() ([]export.Unit, error) { return r.steps.Units(ctx, plan) })
	if err != nil {
		r.fail(ctx, jobID, "read plan", err)
		return
	}
	progress, err := retry(ctx, r.opts, func() (map[string]export.UnitProgress, error) { return r.jobs.Progress(ctx, jobID) })
	if err != nil {
		r.fail(ctx, jobID, "read progress", err)
		return
	}

	uctx, cancelUnits := context.WithCancel(ctx)
	defer cancelUnits()
	sem := make(chan struct{}, r.opts.UnitWorkers)
	var wg sync.WaitGroup
	var once sync.Once
	var unitErr error
	for _, u := range units {
		saved := progress[u.ID]
		if saved.Done {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(u export.Unit, cursor *export.Cursor) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := r.runUnit(uctx, jobID, u, cursor); err != nil {
				once.Do(func() { unitErr = err; cancelUnits() })
			}
		}(u, saved.Cursor)
	}
	wg.Wait()
	if unitErr != nil {
		r.fail(ctx, jobID, "export", unitErr)
		return
	}
	if _, err := retry(ctx, r.opts, func() (*export.FinalizeResult, error) {
		return r.steps.Finalize(ctx, export.JobRef{JobID: jobID})
	}); err != nil {
		r.fail(ctx, jobID, "finalize", err)
		return
	}
	log.Debug("job done")
}

func (r *Runner) runUnit(ctx context.Context, jobID string, u export.Unit, cursor *export.Cursor) error {
	for {
		res, err := retry(ctx, r.opts, func() (*export.ChunkResult, error) {
			return r.steps.ExportChunk(ctx, export.ChunkInput{JobID: jobID, Unit: u, Cursor: cursor})
		})
		if err != nil {
			return err
		}
		if res.Done {
			return nil
		}
		cursor = res.Cursor
	}
}

// fail ends a job after a step error, unless the job merely stopped: the
// runner is shutting down (the job resumes on restart) or the job is no
// longer live (cancelled).
func (r *Runner) fail(ctx context.Context, jobID, step string, err error) {
	var notRunning *export.JobNotRunningError
	if errors.As(err, &notRunning) || ctx.Err() != nil {
		r.log.Debug("job stopped", "job", jobID, "step", step, "reason", err)
		return
	}
	in := export.FailInput{JobID: jobID, Error: step, Cause: err.Error()}
	if r.recordFailure(in) {
		return
	}
	// The failure could not be recorded (a full disk, a store error): the
	// job must not stay "in progress" and hold a place under the cap, so
	// keep trying in the background until a write succeeds. Were the
	// process to stop first, start-up recovery resumes the job, which
	// fails again and is recorded then.
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		wait := r.opts.Backoff
		for {
			select {
			case <-r.base.Done():
				return
			case <-time.After(wait):
			}
			if r.recordFailure(in) {
				r.log.Info("job failure recorded after retrying", "job", jobID)
				return
			}
			wait = min(2*wait, 30*time.Second)
		}
	}()
}

// recordFailure runs the Fail step once, with a fresh context (the job's
// own may be cancelled by now).
func (r *Runner) recordFailure(in export.FailInput) bool {
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ferr := r.steps.Fail(fctx, in); ferr != nil {
		r.log.Error("mark job failed", "job", in.JobID, "err", ferr)
		return false
	}
	return true
}

// retry calls fn until it succeeds, fails with a non-retryable error, or the
// retries run out.
func retry[T any](ctx context.Context, opts Options, fn func() (T, error)) (T, error) {
	backoff := opts.Backoff
	for attempt := 0; ; attempt++ {
		v, err := fn()
		var re *export.RetryableError
		if err == nil || !errors.As(err, &re) || attempt >= opts.Retries || ctx.Err() != nil {
			return v, err
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return v, ctx.Err()
		}
		backoff *= 2
	}
}
