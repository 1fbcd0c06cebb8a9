package export

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
)

// JobStore keeps job records, each unit's progress and the list of files
// each job wrote. Progress and files are records of their own beside the
// job's (never inside it), written only while the job is live, so the job
// record stays small however many units and files a job has.
type JobStore interface {
	// Create stores a new job; ErrJobExists if the ID is taken.
	Create(ctx context.Context, job *Job) error
	// Get returns a job; ErrJobNotFound if there is none.
	Get(ctx context.Context, id string) (*Job, error)
	// Transition changes a job's status if its current status is in t.From,
	// else returns a *ConflictError; ErrJobNotFound if there is no job.
	Transition(ctx context.Context, id string, t Transition) (*Job, error)
	// SaveProgress sets one unit's progress (a record of its own) while
	// the job is in progress, else returns a *ConflictError.
	SaveProgress(ctx context.Context, id, unitID string, p UnitProgress) error
	// Progress returns the saved progress of a job's units, by unit id.
	Progress(ctx context.Context, id string) (map[string]UnitProgress, error)
	// PutFile records a written file (idempotent by key) while the job is
	// accepted or in progress, else returns a *ConflictError.
	PutFile(ctx context.Context, id string, f File) error
	// Files lists a job's recorded files.
	Files(ctx context.Context, id string) ([]File, error)
	// CountLive counts the owner's accepted and in-progress jobs.
	CountLive(ctx context.Context, owner string) (int, error)
}

// FileWriter streams one file. Nothing is visible under the key until Commit
// succeeds; Abort discards what was written.
type FileWriter interface {
	io.Writer
	Commit() error
	Abort() error
}

// FileStore holds exported NDJSON files.
type FileStore interface {
	// Create starts a file at key, replacing any file there on Commit.
	Create(ctx context.Context, key string) (FileWriter, error)
	// URL returns a link a client can download key from until expires.
	URL(ctx context.Context, key string, expires time.Time) (string, error)
	// DeleteJob removes every file under the job's prefix.
	DeleteJob(ctx context.Context, jobID string) error
	// Open reads a committed file (the steps read the plan and patient
	// batches they stored); an error wrapping fs.ErrNotExist if none.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// Linker makes a file's download link: every FileStore is one; the
// API's own download route is another (ManifestLinkedBy).
type Linker interface {
	URL(ctx context.Context, key string, expires time.Time) (string, error)
}

// Query is what a Source needs to select the resources of one request.
type Query struct {
	Level   bulkdata.Level
	GroupID string
	// Patients restricts a Patient or Group export to these patient ids.
	Patients []string
	// Since excludes resources last updated at or before it; Until excludes
	// those updated after it. Until is never later than the job's
	// transactionTime.
	Since *time.Time
	Until *time.Time
	// TypeFilters are the _typeFilter queries ("param=value&…") for the type
	// being read, OR-ed together.
	TypeFilters []string
	// Elements are the _elements names that apply to the type being read
	// (without a type prefix). The engine subsets every resource itself; a
	// source may also pass them on to save reading what is dropped.
	Elements []string
	// Upstream is what the source recorded about its upstream when the job
	// was kicked off (Job.Upstream; opaque, may be empty).
	Upstream string
}

// ProbingSource is a Source that looks at its upstream once per kick-off:
// whether it answers, its clock (the job's transactionTime, so that the
// upper bound of every search is the upstream's time, not ours) and what
// it can do, recorded in the job so every later step sees the same.
type ProbingSource interface {
	Source
	Probe(ctx context.Context) (Probe, error)
}

// Probe is what a ProbingSource found at kick-off.
type Probe struct {
	// Now is the upstream's clock (zero: unknown, ours is used).
	Now time.Time
	// State is recorded as Job.Upstream and handed back in Query.Upstream.
	State string
}

// SourceCaps says which optional request features a Source implements.
type SourceCaps struct {
	TypeFilter bool
}

// Source is where resources come from.
type Source interface {
	// Caps reports the optional features the source implements.
	Caps() SourceCaps
	// Types lists the resource types the source can export, sorted.
	Types(ctx context.Context) ([]string, error)
	// GroupMembers returns the ids of the Patients that are active members
	// of Group id; ErrGroupNotFound if there is no such Group.
	GroupMembers(ctx context.Context, id string) ([]string, error)
	// MissingPatients returns the ids among ids that name no Patient.
	MissingPatients(ctx context.Context, ids []string) ([]string, error)
	// Plan splits one type of a query into segments that can be read
	// independently; an empty list means the type has no data.
	Plan(ctx context.Context, q Query, typ string) ([]string, error)
	// Open reads one segment from cursor ("" for its start).
	Open(ctx context.Context, q Query, typ, segment, cursor string) (Reader, error)
}

// DeletionSource is a Source that can list deleted resources.
type DeletionSource interface {
	Source
	// ListsDeletions reports whether the source keeps deletions of typ.
	ListsDeletions(ctx context.Context, typ string) bool
	// OpenDeleted reads, from cursor, the references ("Type/id") of the
	// resources of typ deleted after q.Since and not after q.Until that do
	// not exist any more.
	OpenDeleted(ctx context.Context, q Query, typ, cursor string) (Reader, error)
}

// Reader streams the resources of one segment.
type Reader interface {
	// Next returns the next resource as one line of compact JSON. The slice
	// is valid until the next call. It returns io.EOF at the end and a
	// *BadRecordError for a record it skipped (reading may go on).
	Next() ([]byte, error)
	// Cursor is the position after the last resource returned (or skipped).
	Cursor() string
	Close() error
}

// Runner orchestrates a job's steps: the Step Functions state machine on
// AWS, a goroutine pool locally.
type Runner interface {
	Start(ctx context.Context, jobID string) error
	Stop(ctx context.Context, jobID string) error
}

// EachResource calls fn with every resource r returns until fn returns
// false or r ends, skipping the records r reports as bad, and closes r.
// The line is valid only during the call.
func EachResource(r Reader, fn func(line []byte) bool) error {
	defer r.Close()
	for {
		line, err := r.Next()
		if err == io.EOF {
			return nil
		}
		var bad *BadRecordError
		if errors.As(err, &bad) {
			continue
		}
		if err != nil {
			return err
		}
		if !fn(line) {
			return nil
		}
	}
}

// ReferencedCursors is a Source whose positions can name what a client
// asked for (an upstream's next-page link carries patient ids and search
// parameters in its query): ExportChunk then always stores the position as
// an object and hands on only its key (Cursor.SourceRef), so no position
// reaches the Step Functions history, the unit's record or a log.
type ReferencedCursors interface {
	CursorsByReference() bool
}

func cursorsByReference(src Source) bool {
	rc, ok := src.(ReferencedCursors)
	return ok && rc.CursorsByReference()
}
