// Package retention removes what an export leaves behind when it expires:
// its files and its job records, at the job's Expires (completion +
// retention), never before, and never for a job that is still live. It is
// the AWS counterpart of the embedded server's janitor: a scheduled
// function runs Sweep every few minutes, so files disappear minutes after
// Expires instead of when S3 lifecycle (whole days, counted from each
// object's creation) or DynamoDB TTL (within days) get to them; those stay
// as a backstop.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// Files is the file store as the sweep sees it.
type Files interface {
	// JobIDs lists the jobs that have files.
	JobIDs(ctx context.Context) ([]string, error)
	DeleteJob(ctx context.Context, jobID string) error
}

// Jobs is the job store as the sweep sees it.
type Jobs interface {
	Get(ctx context.Context, id string) (*export.Job, error)
	// DeleteExpired deletes the job's records if the job has ended and
	// expired by now (a conditional delete: a job that changed since it
	// was read is kept); false if it was kept.
	DeleteExpired(ctx context.Context, id string, now time.Time) (bool, error)
}

// Result counts what one sweep did.
type Result struct {
	Checked int `json:"checked"`
	// Expired jobs whose files and records were deleted; Orphans, jobs
	// with files and no record (its TTL ran out, or it never committed).
	Expired int `json:"expired"`
	Orphans int `json:"orphans"`
	Failed  int `json:"failed"`
}

// Due reports whether a job's files and records may go at now: it ended
// (completed, failed or cancelled) and its Expires has passed.
func Due(job *export.Job, now time.Time) bool {
	if job.Status.Live() {
		return false
	}
	return job.Status == export.StatusCancelled || now.After(job.ExpiresAt)
}

// Sweep deletes the files and records of every job with files that is due
// at now. A job it cannot read is left for the next sweep.
func Sweep(ctx context.Context, jobs Jobs, files Files, now time.Time, log *slog.Logger) (Result, error) {
	var res Result
	ids, err := files.JobIDs(ctx)
	if err != nil {
		return res, fmt.Errorf("sweep: list jobs with files: %w", err)
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if !madeJobID(id) {
			continue // e.g. exports/mapruns/: the Distributed Map's results
		}
		res.Checked++
		job, err := jobs.Get(ctx, id)
		switch {
		case errors.Is(err, export.ErrJobNotFound):
			// Files without a record: kick-off writes the record before
			// any file, so its record expired (TTL) or was removed.
			if err := files.DeleteJob(ctx, id); err != nil {
				log.WarnContext(ctx, "sweep: delete files", "job", id, "err", err)
				res.Failed++
				continue
			}
			res.Orphans++
			continue
		case err != nil:
			log.WarnContext(ctx, "sweep: read job", "job", id, "err", err)
			res.Failed++
			continue
		}
		if !Due(job, now) {
			continue
		}
		if err := files.DeleteJob(ctx, id); err != nil {
			log.WarnContext(ctx, "sweep: delete files", "job", id, "err", err)
			res.Failed++
			continue
		}
		if _, err := jobs.DeleteExpired(ctx, id, now); err != nil {
			log.WarnContext(ctx, "sweep: delete job records", "job", id, "err", err)
			res.Failed++
			continue
		}
		log.InfoContext(ctx, "sweep: expired", "job", id, "expired", job.ExpiresAt.UTC().Format(time.RFC3339))
		res.Expired++
	}
	return res, nil
}

// madeJobID reports whether id is one export.NewJobID or IdempotentJobID
// makes (32 lowercase hex digits): other folders under the prefix are
// not jobs' and stay.
func madeJobID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
