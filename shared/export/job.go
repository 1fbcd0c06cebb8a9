package export

import (
	"fmt"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Status is the lifecycle state of a job.
type Status string

// Job states.
const (
	StatusAccepted   Status = "accepted"
	StatusInProgress Status = "in-progress"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusCancelled  Status = "cancelled"
)

// Live reports whether a job in this state still has work to do.
func (s Status) Live() bool { return s == StatusAccepted || s == StatusInProgress }

// Job is one export request and its progress.
type Job struct {
	ID              string           `json:"id"`
	Owner           string           `json:"owner"`
	Status          Status           `json:"status"`
	Request         bulkdata.Request `json:"request"`
	RequestURL      string           `json:"requestUrl"`
	TransactionTime time.Time        `json:"transactionTime"`
	// Upstream is what the source probed of its upstream at kick-off
	// (Probe.State), handed to every Plan and chunk in Query.Upstream.
	Upstream    string     `json:"upstream,omitempty"`
	CreatedAt   time.Time  `json:"createdAt"`
	UpdatedAt   time.Time  `json:"updatedAt"`
	CompletedAt *time.Time `json:"completedAt,omitempty"`
	// ExpiresAt is when the job record and its files may be removed: the
	// retention period counted from completion (before that, a generous
	// bound on how long a live job may take).
	ExpiresAt time.Time `json:"expiresAt"`
	// Plan names the stored plan, set by Plan when the job starts. The
	// units themselves, their progress and the files live outside the job
	// record, so it keeps a fixed, small size however large the export.
	Plan *PlanRef `json:"plan,omitempty"`
	// Outcome and FailStatus describe why a failed job failed.
	Outcome    *fhir.OperationOutcome `json:"outcome,omitempty"`
	FailStatus int                    `json:"failStatus,omitempty"`
}

// PlanRef is what the job record keeps of its plan: where the plan object
// is, how many units it holds and which types they export.
type PlanRef struct {
	// Key is the plan object in the FileStore: a JSON array of Units.
	Key   string   `json:"key"`
	Units int      `json:"units"`
	Types []string `json:"types,omitempty"`
	// Batches is how many patient batches the plan holds (0: none).
	Batches int `json:"batches,omitempty"`
	// Groups names the plan's units without listing them (a job record
	// stays small): a partial manifest learns from them which units are
	// not done yet. Absent in plans made before they were recorded.
	Groups []UnitGroup `json:"groups,omitempty"`
}

// UnitGroup is the units of one resource type (or of one organized
// export): Units numbered units "<Name>.0000"…, and a "<Name>.deleted"
// unit when Deleted.
type UnitGroup struct {
	Name    string `json:"name"`
	Units   int    `json:"units"`
	Deleted bool   `json:"deleted,omitempty"`
}

// UnitID is the id of the n-th numbered unit of a group.
func UnitID(group string, n int) string { return fmt.Sprintf("%s.%04d", group, n) }

// DeletedUnitID is the id of a group's deletion unit.
func DeletedUnitID(group string) string { return group + ".deleted" }

// UnitIDs lists the ids of every unit in the groups.
func (p *PlanRef) UnitIDs() []string {
	var out []string
	for _, g := range p.Groups {
		for n := 0; n < g.Units; n++ {
			out = append(out, UnitID(g.Name, n))
		}
		if g.Deleted {
			out = append(out, DeletedUnitID(g.Name))
		}
	}
	return out
}

// Unit is one independently exportable piece of a job: one resource type, or
// one segment of a type when the source can split it, for one batch of
// patients at patient and group level.
type Unit struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Segment string `json:"segment,omitempty"`
	// Batch is the FileStore key of the unit's patient batch (a JSON array
	// of patient ids resolved at Plan), for patient and group exports.
	Batch string `json:"batch,omitempty"`
	// Deleted marks a unit that lists the type's deletions (the manifest's
	// deleted array) instead of exporting resources.
	Deleted bool `json:"deleted,omitempty"`
	// Blocks marks a unit of an export organized by Patient: the resource
	// blocks of its patient batch, across every type (Type is empty).
	Blocks bool `json:"blocks,omitempty"`
}

// UnitProgress is what a unit has written so far.
type UnitProgress struct {
	Resources int64   `json:"resources"`
	Bytes     int64   `json:"bytes"`
	Files     int     `json:"files"`
	Done      bool    `json:"done"`
	Cursor    *Cursor `json:"cursor,omitempty"`
}

// Cursor is where ExportChunk resumes a unit: the source position, the next
// file sequence number, and the running totals up to that position.
type Cursor struct {
	Source string `json:"source,omitempty"`
	// SourceRef, instead of Source, names a FileStore object holding a
	// source position too long to travel between states.
	SourceRef string `json:"sourceRef,omitempty"`
	Seq       int    `json:"seq"`
	Resources int64  `json:"resources"`
	Bytes     int64  `json:"bytes"`
	Files     int    `json:"files"`
}

// Totals sums the progress of units.
func Totals(progress map[string]UnitProgress) (unitsDone int, resources, bytes int64) {
	for _, p := range progress {
		if p.Done {
			unitsDone++
		}
		resources += p.Resources
		bytes += p.Bytes
	}
	return unitsDone, resources, bytes
}

// ProgressText is the X-Progress header value (under 100 characters) for
// the job with its units' progress.
func (j *Job) ProgressText(progress map[string]UnitProgress) string {
	switch j.Status {
	case StatusAccepted:
		return "queued"
	case StatusInProgress:
		if j.Plan == nil {
			return "planning"
		}
		done, res, _ := Totals(progress)
		return fmt.Sprintf("exporting: %d/%d units done, %d resources", done, j.Plan.Units, res)
	}
	return string(j.Status)
}

// FileKind says which manifest array a file belongs to.
type FileKind string

// Kinds of files.
const (
	KindOutput  FileKind = "output"
	KindError   FileKind = "error"
	KindDeleted FileKind = "deleted"
)

// File is one NDJSON file a job wrote, recorded outside the job item so a
// job with many files never outgrows its store.
type File struct {
	Key   string   `json:"key"`
	Kind  FileKind `json:"kind"`
	Type  string   `json:"type"`
	Count int64    `json:"count"`
	Bytes int64    `json:"bytes"`
	Unit  string   `json:"unit"`
	Seq   int      `json:"seq"`
	// Continues is the key of the file the last resource block of this
	// one goes on in (organizeOutputBy; the manifest's continuesInFile).
	Continues string `json:"continues,omitempty"`
}

// Transition is a conditional status change with the fields it sets.
type Transition struct {
	From []Status
	To   Status
	// Optional fields set together with the status.
	Plan        *PlanRef
	CompletedAt *time.Time
	ExpiresAt   *time.Time
	Outcome     *fhir.OperationOutcome
	FailStatus  int
}

// Allows reports whether the transition may apply to a job in status s.
func (t Transition) Allows(s Status) bool {
	for _, f := range t.From {
		if f == s {
			return true
		}
	}
	return false
}

// Apply sets the transition's fields on j (for stores that keep whole jobs).
func (t Transition) Apply(j *Job, now time.Time) {
	j.Status = t.To
	j.UpdatedAt = now
	if t.Plan != nil {
		j.Plan = t.Plan
	}
	if t.CompletedAt != nil {
		j.CompletedAt = t.CompletedAt
	}
	if t.ExpiresAt != nil {
		j.ExpiresAt = *t.ExpiresAt
	}
	if t.Outcome != nil {
		j.Outcome = t.Outcome
		j.FailStatus = t.FailStatus
	}
}
