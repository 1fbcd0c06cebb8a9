// Package export is the core of bulkfhir: the job lifecycle, the ports it
// runs on (JobStore, FileStore, Source, Runner), the three export steps
// (Plan → ExportChunk → Finalize, plus Fail) and the Service behind the HTTP
// API (kick-off, status, cancel).
//
// The steps are plain functions over the ports with JSON-serialisable input
// and output: the embedded runner calls them in-process and a Step Functions
// state machine calls them as Lambda tasks. Nothing here may depend on which
// runner calls them, and this package imports no AWS package.
//
// Invariants:
//   - A job's status changes only through JobStore.Transition, conditional on
//     the current status: accepted → in-progress → completed | failed, and any
//     live or finished job → cancelled. A cancelled job never comes back.
//   - ExportChunk is idempotent: the same input writes the same objects under
//     the same keys and records the same progress.
//   - Output is streamed: one resource line at a time, files rolled by bytes.
package export
