package export

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors the ports return; callers decide with errors.Is.
var (
	ErrJobNotFound   = errors.New("job not found")
	ErrJobExists     = errors.New("job already exists")
	ErrGroupNotFound = errors.New("group not found")
)

// ConflictError is returned by a conditional JobStore write whose condition
// did not hold: the job was not in a state the change allows.
type ConflictError struct {
	JobID   string
	Current Status
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("job %s is %s", e.JobID, e.Current)
}

// IsConflict reports whether err is (or wraps) a ConflictError.
func IsConflict(err error) bool {
	var c *ConflictError
	return errors.As(err, &c)
}

// RetryableError marks a step failure worth retrying (a source, store or
// object store that was briefly unavailable). Step Functions matches it by
// its type name, so a step returns it unwrapped; it wraps its cause, so
// errors.Is and errors.As see through it.
type RetryableError struct {
	Msg string
	Err error
}

func (e *RetryableError) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

// Unwrap returns the cause.
func (e *RetryableError) Unwrap() error { return e.Err }

// retryable is the one place step errors are classified. A job that is no
// longer live (a failed condition on its status) ends the run quietly as a
// *JobNotRunningError; a missing job cannot come back and is returned as
// it is; everything else (store, object store and source failures,
// timeouts) is worth another attempt.
func retryable(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	msg := fmt.Sprintf(format, args...)
	var nr *JobNotRunningError
	switch {
	case errors.As(err, &nr):
		return nr
	case IsConflict(err):
		return &JobNotRunningError{Msg: msg + ": " + err.Error()}
	case errors.Is(err, ErrJobNotFound):
		return fmt.Errorf("%s: %w", msg, err)
	}
	return &RetryableError{Msg: msg, Err: err}
}

// JobNotRunningError is returned by a step called for a job that is no
// longer live (cancelled or failed meanwhile). The state machine ends
// quietly on it.
type JobNotRunningError struct{ Msg string }

func (e *JobNotRunningError) Error() string { return e.Msg }

// BadRecordError is returned by a Source reader for one resource it could
// not read (invalid JSON, no resourceType). The export goes on; the record
// is reported in the manifest's error files.
type BadRecordError struct {
	Position string
	Reason   string
	// Warning marks a notice rather than a lost record (resources the
	// source dropped because they were not asked for); it is reported
	// with severity warning.
	Warning bool
}

func (e *BadRecordError) Error() string {
	return fmt.Sprintf("bad record at %s: %s", e.Position, e.Reason)
}

// ErrOutOfTime is returned (wrapped) by a Source reader that would have to
// wait past the step's stop time (StopTime) to go on, for example because
// its upstream asks to retry later. The chunk ends there with its cursor
// and the next chunk goes on; it is not a failure.
var ErrOutOfTime = errors.New("out of time for this step")

type stopTimeKey struct{}

// WithStopTime returns a context that tells sources when the step stops
// taking resources (before the context's deadline, which keeps a margin to
// commit).
func WithStopTime(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, stopTimeKey{}, t)
}

// StopTime is the step's stop time set by WithStopTime, if any.
func StopTime(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(stopTimeKey{}).(time.Time)
	return t, ok
}
