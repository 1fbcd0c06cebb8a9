// Package metrics is the catalog of bulkfhir's operational figures (names
// and units, shared by the functions, the embedded server and the stack's
// dashboard and alarms), the Recorder port that receives them, and an
// encoder of CloudWatch Embedded Metric Format log lines. It imports only
// the standard library, so the CDK app can read the names.
package metrics

import "context"

// Unit is a CloudWatch metric unit.
type Unit string

// Units used here.
const (
	Count        Unit = "Count"
	Bytes        Unit = "Bytes"
	Seconds      Unit = "Seconds"
	Milliseconds Unit = "Milliseconds"
	CountPerSec  Unit = "Count/Second"
)

// The figures. Each is recorded once per event named in its comment.
const (
	// ExportsAccepted: a kick-off made a job (it may wait in the queue).
	ExportsAccepted = "ExportsAccepted"
	// ExportsStarted: Plan started a job's export (it left the queue).
	ExportsStarted = "ExportsStarted"
	// QueueWait: seconds from kick-off to the start of Plan.
	QueueWait = "QueueWait"
	// ExportsCompleted, ExportsFailed, ExportsCancelled: a job ended so.
	ExportsCompleted = "ExportsCompleted"
	ExportsFailed    = "ExportsFailed"
	ExportsCancelled = "ExportsCancelled"
	// ChunkResources, ChunkBytes, ChunkDuration, ChunkResourcesPerSecond:
	// one ExportChunk call.
	ChunkResources          = "ChunkResources"
	ChunkBytes              = "ChunkBytes"
	ChunkDuration           = "ChunkDuration"
	ChunkResourcesPerSecond = "ChunkResourcesPerSecond"
	// SourceRetries and SourceThrottled: upstream requests retried during
	// a chunk, and how many of those were 429 answers.
	SourceRetries   = "SourceRetries"
	SourceThrottled = "SourceThrottled"
	// JobResources, JobBytes, JobFiles, JobDuration: a completed job
	// (JobDuration: seconds from kick-off to completion).
	JobResources = "JobResources"
	JobBytes     = "JobBytes"
	JobFiles     = "JobFiles"
	JobDuration  = "JobDuration"
	// RunningJobs, QueuedJobs, OldestRunningJobAge (seconds since its
	// kick-off), OldestQueuedWait (seconds): each sweep of the queue.
	RunningJobs         = "RunningJobs"
	QueuedJobs          = "QueuedJobs"
	OldestRunningJobAge = "OldestRunningJobAge"
	OldestQueuedWait    = "OldestQueuedWait"
)

// Units of the figures.
var Units = map[string]Unit{
	ExportsAccepted: Count, ExportsStarted: Count, QueueWait: Seconds,
	ExportsCompleted: Count, ExportsFailed: Count, ExportsCancelled: Count,
	ChunkResources: Count, ChunkBytes: Bytes, ChunkDuration: Milliseconds, ChunkResourcesPerSecond: CountPerSec,
	SourceRetries: Count, SourceThrottled: Count,
	JobResources: Count, JobBytes: Bytes, JobFiles: Count, JobDuration: Seconds,
	RunningJobs: Count, QueuedJobs: Count, OldestRunningJobAge: Seconds, OldestQueuedWait: Seconds,
}

// DimensionStack is the one dimension every figure carries: the stack (or
// server) it comes from.
const DimensionStack = "Stack"

// Value is one figure of an event.
type Value struct {
	Name  string
	Value float64
}

// Event is what happened once: a chunk, a completion, a sweep. Job is the
// job it belongs to ("" for a sweep): a property of the log line, never a
// dimension (one metric per job would be a cost, not a view).
type Event struct {
	Job    string
	Values []Value
}

// Recorder receives events: the EMF encoder on AWS, Prometheus locally.
type Recorder interface {
	Record(ctx context.Context, ev Event)
}

// Nop is a Recorder that drops everything.
type Nop struct{}

// Record implements Recorder.
func (Nop) Record(context.Context, Event) {}
