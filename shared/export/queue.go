package export

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Queue is the global admission of running jobs: a kick-off puts its job at
// the back of the queue, and a job runs only once it holds one of the
// maxRunning running places. Places are taken in kick-off order, each by a
// conditional change (a DynamoDB transaction, a bbolt transaction), so
// concurrent dispatchers can never admit more than maxRunning live jobs. A
// job frees its place the moment it leaves the live states (completed,
// failed, cancelled); nothing has to hand it back.
type Queue interface {
	// Enqueue puts a new accepted job at the back of the queue.
	Enqueue(ctx context.Context, job *Job) error
	// Remove takes a job out of the queue (a cancel); no error if it is
	// not queued.
	Remove(ctx context.Context, job *Job) error
	// Ahead reports whether job still waits and how many waiting jobs were
	// kicked off before it.
	Ahead(ctx context.Context, job *Job) (ahead int, waiting bool, err error)
	// AdmitNext gives the oldest waiting job a running place if fewer than
	// maxRunning admitted jobs are live, and returns its id; "" when no
	// job waits or no place is free. Waiting jobs that are no longer
	// accepted are dropped from the queue on the way.
	AdmitNext(ctx context.Context, maxRunning int) (string, error)
	// Admitted lists the live jobs that hold a running place.
	Admitted(ctx context.Context) ([]string, error)
	// Waiting counts the queued jobs and returns the oldest one's kick-off
	// time (zero when none waits).
	Waiting(ctx context.Context) (n int, oldest time.Time, err error)
}

// QueueKey orders queued jobs by kick-off time, then id: a string that
// sorts as the queue does.
func QueueKey(j *Job) string {
	return fmt.Sprintf("%020d#%s", j.CreatedAt.UnixNano(), j.ID)
}

// SetQueue makes kick-offs wait in q until one of maxRunning running places
// is free (maxRunning <= 0 turns the queue off: every job starts at once).
func (s *Service) SetQueue(q Queue, maxRunning int) {
	if maxRunning <= 0 {
		s.queue, s.maxRunning = nil, 0
		return
	}
	s.queue, s.maxRunning = q, maxRunning
}

// enqueue puts a new job in the queue and starts whatever may start now.
// A job that cannot be queued fails at once (it would otherwise wait
// forever, holding a place of its client's cap).
func (s *Service) enqueue(ctx context.Context, job *Job) error {
	if err := s.queue.Enqueue(ctx, job); err != nil {
		s.log.ErrorContext(ctx, "enqueue job", "job", job.ID, "err", err)
		return s.failStart(ctx, job.ID)
	}
	if _, err := s.Dispatch(ctx); err != nil {
		// The job stays queued: the next completion, cancel or sweep
		// starts it.
		s.log.WarnContext(ctx, "dispatch after kick-off", "job", job.ID, "err", err)
	}
	return nil
}

// failStart marks a job that could not be started failed and returns the
// 503 the kick-off answers.
func (s *Service) failStart(ctx context.Context, id string) error {
	outcome := fhir.Outcome(fhir.SeverityError, fhir.CodeTransient, "the export could not be started; try again")
	e := &bulkdata.Error{Status: http.StatusServiceUnavailable, Outcome: outcome, RetryAfter: 5 * time.Second}
	if _, terr := s.jobs.Transition(ctx, id, Transition{
		From: []Status{StatusAccepted}, To: StatusFailed, Outcome: &outcome, FailStatus: http.StatusServiceUnavailable,
	}); terr != nil {
		// The job stays accepted (it counts against the owner's live
		// jobs until its TTL); the client still gets the 503.
		s.log.ErrorContext(ctx, "mark the unstarted job failed", "job", id, "err", terr)
		return errors.Join(e, fmt.Errorf("kick-off: mark job %s failed: %w", id, terr))
	}
	return e
}

// Dispatch starts queued jobs, oldest first, while running places are free,
// and returns the ids it started. It is called by whatever frees a place (a
// completion, a failure, a cancel), after every kick-off and by a periodic
// sweep; calling it more often is harmless. A job whose start fails is
// marked failed, which frees its place for the next one.
func (s *Service) Dispatch(ctx context.Context) ([]string, error) {
	if s.queue == nil {
		return nil, nil
	}
	var started []string
	for {
		id, err := s.queue.AdmitNext(ctx, s.maxRunning)
		if err != nil {
			return started, fmt.Errorf("dispatch: %w", err)
		}
		if id == "" {
			return started, nil
		}
		if err := s.runner.Start(ctx, id); err != nil {
			s.log.ErrorContext(ctx, "start admitted job", "job", id, "err", err)
			_ = s.failStart(ctx, id)
			continue
		}
		s.log.InfoContext(ctx, "job admitted", "job", id)
		started = append(started, id)
	}
}

// SweepReport is what a sweep saw: the figures the stuck-export alarm and
// the dashboard watch.
type SweepReport struct {
	Running int
	// OldestRunning is the age of the oldest admitted live job.
	OldestRunning time.Duration
	Queued        int
	// OldestQueued is how long the oldest queued job has waited.
	OldestQueued time.Duration
	// Restarted are admitted jobs that had not started (a dispatcher that
	// stopped between admitting and starting them); Started, jobs it
	// dispatched.
	Restarted, Started []string
}

// restartAfter is how long an admitted job may stay accepted before a sweep
// starts it again (starting is idempotent: the execution is named by the
// job id).
const restartAfter = time.Minute

// Sweep is the periodic safety net of the queue: it starts again admitted
// jobs that never started, dispatches queued jobs into free places, and
// reports the ages the stuck-export alarm watches.
func (s *Service) Sweep(ctx context.Context) (*SweepReport, error) {
	rep := &SweepReport{}
	if s.queue == nil {
		return rep, nil
	}
	now := s.now()
	ids, err := s.queue.Admitted(ctx)
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	for _, id := range ids {
		job, err := s.jobs.Get(ctx, id)
		if err != nil {
			continue // gone meanwhile: its place is free
		}
		if !job.Status.Live() {
			continue
		}
		rep.Running++
		rep.OldestRunning = max(rep.OldestRunning, now.Sub(job.CreatedAt))
		if job.Status == StatusAccepted && now.Sub(job.UpdatedAt) > restartAfter {
			if err := s.runner.Start(ctx, id); err != nil {
				s.log.WarnContext(ctx, "sweep: restart admitted job", "job", id, "err", err)
				continue
			}
			rep.Restarted = append(rep.Restarted, id)
		}
	}
	if rep.Started, err = s.Dispatch(ctx); err != nil {
		return rep, err
	}
	rep.Running += len(rep.Started)
	n, oldest, err := s.queue.Waiting(ctx)
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	rep.Queued = n
	if !oldest.IsZero() {
		rep.OldestQueued = now.Sub(oldest)
	}
	return rep, nil
}

// queuedProgress is the X-Progress of an accepted job under the queue.
func (s *Service) queuedProgress(ctx context.Context, job *Job) string {
	ahead, waiting, err := s.queue.Ahead(ctx, job)
	switch {
	case err != nil:
		s.log.WarnContext(ctx, "status: queue position", "job", job.ID, "err", err)
		return "queued"
	case !waiting:
		return "starting"
	case ahead == 1:
		return "queued: 1 job ahead"
	}
	return fmt.Sprintf("queued: %d jobs ahead", ahead)
}
