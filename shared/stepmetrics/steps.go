// Package stepmetrics records bulkfhir's operational figures (package
// metrics) from the results of the export steps, around them: the steps
// and their per-resource loop are not touched, and every figure is taken
// once per step call (a chunk, a completion), not per resource. The same
// wrapper serves the Lambda functions (EMF lines) and the embedded server
// (Prometheus).
package stepmetrics

import (
	"context"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/joblog"
	"github.com/bulkfhir/bulkfhir/shared/metrics"
)

// Inner are the export steps being wrapped (*export.Steps).
type Inner interface {
	Plan(ctx context.Context, in export.JobRef) (*export.PlanResult, error)
	Units(ctx context.Context, plan *export.PlanResult) ([]export.Unit, error)
	ExportChunk(ctx context.Context, in export.ChunkInput) (*export.ChunkResult, error)
	Finalize(ctx context.Context, in export.JobRef) (*export.FinalizeResult, error)
	Fail(ctx context.Context, in export.FailInput) error
}

// JobGetter reads a job (its creation time, its status before a step).
type JobGetter interface {
	Get(ctx context.Context, id string) (*export.Job, error)
}

// RetryCounter is a source that counts its upstream retries
// (*fhirsource.Source).
type RetryCounter interface {
	RetryStats() (retries, throttled int64)
}

// Steps wraps the export steps and records their figures.
type Steps struct {
	inner Inner
	jobs  JobGetter
	rec   metrics.Recorder
	// retries is the source's counter, nil for a source without one.
	retries RetryCounter
	now     func() time.Time
}

// New wraps inner. source may be any export.Source; its retries are
// counted when it is a RetryCounter.
func New(inner Inner, jobs JobGetter, source any, rec metrics.Recorder) *Steps {
	s := &Steps{inner: inner, jobs: jobs, rec: rec, now: time.Now}
	if rc, ok := source.(RetryCounter); ok {
		s.retries = rc
	}
	return s
}

// SetClock replaces the clock (tests).
func (s *Steps) SetClock(now func() time.Time) { s.now = now }

func (s *Steps) job(ctx context.Context, id string) *export.Job {
	j, err := s.jobs.Get(ctx, id)
	if err != nil {
		return nil
	}
	return j
}

func (s *Steps) retryStats() (int64, int64) {
	if s.retries == nil {
		return 0, 0
	}
	return s.retries.RetryStats()
}

// Plan runs the Plan step; the first Plan of a job records that its export
// started and how long it waited in the queue.
func (s *Steps) Plan(ctx context.Context, in export.JobRef) (*export.PlanResult, error) {
	ctx = joblog.With(ctx, in.JobID)
	before := s.job(ctx, in.JobID)
	res, err := s.inner.Plan(ctx, in)
	if err == nil && before != nil && before.Status == export.StatusAccepted {
		s.rec.Record(ctx, metrics.Event{Job: in.JobID, Values: []metrics.Value{
			{Name: metrics.ExportsStarted, Value: 1},
			{Name: metrics.QueueWait, Value: seconds(s.now().Sub(before.CreatedAt))},
		}})
	}
	return res, err
}

// Units reads the plan's units (no figures).
func (s *Steps) Units(ctx context.Context, plan *export.PlanResult) ([]export.Unit, error) {
	return s.inner.Units(ctx, plan)
}

// ExportChunk runs one chunk and records what it wrote, how long it took,
// and the upstream retries during it.
func (s *Steps) ExportChunk(ctx context.Context, in export.ChunkInput) (*export.ChunkResult, error) {
	ctx = joblog.With(ctx, in.JobID)
	r0, t0 := s.retryStats()
	start := s.now()
	res, err := s.inner.ExportChunk(ctx, in)
	took := s.now().Sub(start)
	r1, t1 := s.retryStats()
	values := []metrics.Value{
		{Name: metrics.SourceRetries, Value: float64(r1 - r0)},
		{Name: metrics.SourceThrottled, Value: float64(t1 - t0)},
	}
	if err == nil && res != nil && res.Cursor != nil {
		var prev export.Cursor
		if in.Cursor != nil {
			prev = *in.Cursor
		}
		resources := float64(res.Cursor.Resources - prev.Resources)
		values = append(values,
			metrics.Value{Name: metrics.ChunkResources, Value: resources},
			metrics.Value{Name: metrics.ChunkBytes, Value: float64(res.Cursor.Bytes - prev.Bytes)},
			metrics.Value{Name: metrics.ChunkDuration, Value: float64(took.Microseconds()) / 1000},
		)
		if secs := took.Seconds(); secs > 0 {
			values = append(values, metrics.Value{Name: metrics.ChunkResourcesPerSecond, Value: resources / secs})
		}
	}
	if err != nil && r1 == r0 {
		return res, err // a failed chunk without retries: nothing to count
	}
	s.rec.Record(ctx, metrics.Event{Job: in.JobID, Values: values})
	return res, err
}

// Finalize completes a job; the completion (not a repeated Finalize of a
// completed job) records the job's totals and duration.
func (s *Steps) Finalize(ctx context.Context, in export.JobRef) (*export.FinalizeResult, error) {
	ctx = joblog.With(ctx, in.JobID)
	before := s.job(ctx, in.JobID)
	res, err := s.inner.Finalize(ctx, in)
	if err == nil && res != nil && before != nil && before.Status == export.StatusInProgress {
		s.rec.Record(ctx, metrics.Event{Job: in.JobID, Values: []metrics.Value{
			{Name: metrics.ExportsCompleted, Value: 1},
			{Name: metrics.JobResources, Value: float64(res.Resources)},
			{Name: metrics.JobBytes, Value: float64(res.Bytes)},
			{Name: metrics.JobFiles, Value: float64(res.Files)},
			{Name: metrics.JobDuration, Value: seconds(s.now().Sub(before.CreatedAt))},
		}})
	}
	return res, err
}

// Fail marks a job failed; a live job that became failed is counted.
func (s *Steps) Fail(ctx context.Context, in export.FailInput) error {
	ctx = joblog.With(ctx, in.JobID)
	before := s.job(ctx, in.JobID)
	err := s.inner.Fail(ctx, in)
	if err == nil && before != nil && before.Status.Live() {
		if after := s.job(ctx, in.JobID); after != nil && after.Status == export.StatusFailed {
			s.rec.Record(ctx, metrics.Event{Job: in.JobID, Values: []metrics.Value{{Name: metrics.ExportsFailed, Value: 1}}})
		}
	}
	return err
}

// Observer counts the kick-offs and cancels the export Service reports.
type Observer struct{ Rec metrics.Recorder }

var _ export.Observer = Observer{}

// JobEvent implements export.Observer.
func (o Observer) JobEvent(ctx context.Context, job *export.Job, ev export.JobEvent) {
	name := metrics.ExportsAccepted
	if ev == export.EventCancelled {
		name = metrics.ExportsCancelled
	}
	o.Rec.Record(ctx, metrics.Event{Job: job.ID, Values: []metrics.Value{{Name: name, Value: 1}}})
}

// RecordSweep records what a sweep of the queue saw.
func RecordSweep(ctx context.Context, rec metrics.Recorder, rep *export.SweepReport) {
	rec.Record(ctx, metrics.Event{Values: []metrics.Value{
		{Name: metrics.RunningJobs, Value: float64(rep.Running)},
		{Name: metrics.QueuedJobs, Value: float64(rep.Queued)},
		{Name: metrics.OldestRunningJobAge, Value: seconds(rep.OldestRunning)},
		{Name: metrics.OldestQueuedWait, Value: seconds(rep.OldestQueued)},
	}})
}

func seconds(d time.Duration) float64 { return d.Seconds() }
