package export

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"sort"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Steps are the export steps over the ports. The same value serves the
// embedded runner and the Lambda task handlers.
type Steps struct {
	jobs   JobStore
	files  FileStore
	source Source
	cfg    Config
	now    func() time.Time
	log    *slog.Logger
}

// NewSteps returns the steps over the given ports.
func NewSteps(jobs JobStore, files FileStore, source Source, cfg Config, log *slog.Logger) *Steps {
	if log == nil {
		log = slog.Default()
	}
	return &Steps{jobs: jobs, files: files, source: source, cfg: cfg.withDefaults(), now: time.Now, log: log}
}

// SetClock replaces the clock (tests).
func (s *Steps) SetClock(now func() time.Time) { s.now = now }

// JobRef names a job: the input of Plan and Finalize.
type JobRef struct {
	JobID string `json:"jobId"`
}

// PlanResult is Plan's output: the work units, mapped over by the runner.
type PlanResult struct {
	JobID string `json:"jobId"`
	Units []Unit `json:"units"`
}

// ChunkInput is ExportChunk's input. Cursor is nil for a unit's first chunk.
type ChunkInput struct {
	JobID  string  `json:"jobId"`
	Unit   Unit    `json:"unit"`
	Cursor *Cursor `json:"cursor,omitempty"`
}

// ChunkResult is ExportChunk's output; call again with Cursor until Done.
type ChunkResult struct {
	JobID  string  `json:"jobId"`
	Unit   Unit    `json:"unit"`
	Cursor *Cursor `json:"cursor,omitempty"`
	Done   bool    `json:"done"`
}

// FinalizeResult summarises a completed job.
type FinalizeResult struct {
	JobID     string `json:"jobId"`
	Files     int    `json:"files"`
	Resources int64  `json:"resources"`
	Bytes     int64  `json:"bytes"`
}

// FailInput is the input of Fail: the error the runner caught.
type FailInput struct {
	JobID string `json:"jobId"`
	Error string `json:"error,omitempty"`
	Cause string `json:"cause,omitempty"`
}

// Plan turns a job's request into work units and moves the job to
// in-progress. Called again for a job already planned, it returns the same
// units.
func (s *Steps) Plan(ctx context.Context, in JobRef) (*PlanResult, error) {
	log := s.log.With("job", in.JobID, "step", "plan")
	job, err := s.jobs.Get(ctx, in.JobID)
	if err != nil {
		return nil, fmt.Errorf("plan: get job %s: %w", in.JobID, err)
	}
	switch job.Status {
	case StatusInProgress:
		if job.Units != nil {
			return &PlanResult{JobID: job.ID, Units: job.Units}, nil
		}
	case StatusAccepted:
	default:
		return nil, &JobNotRunningError{Msg: fmt.Sprintf("plan: job %s is %s", job.ID, job.Status)}
	}

	types, err := s.exportTypes(ctx, job)
	if err != nil {
		return nil, &RetryableError{Msg: fmt.Sprintf("plan: list source types: %v", err)}
	}
	units := []Unit{}
	for _, t := range types {
		segs, err := s.source.Plan(ctx, s.query(job, t), t)
		if err != nil {
			return nil, &RetryableError{Msg: fmt.Sprintf("plan %s: %v", t, err)}
		}
		for i, seg := range segs {
			units = append(units, Unit{ID: fmt.Sprintf("%s.%04d", t, i), Type: t, Segment: seg})
		}
		// Deletions are listed for system exports with _since, when the
		// source keeps them; a deleted resource cannot be placed in a
		// patient's compartment any more.
		if ds, ok := s.source.(DeletionSource); ok && job.Request.Since != nil &&
			job.Request.Level == bulkdata.LevelSystem && ds.ListsDeletions(ctx, t) {
			units = append(units, Unit{ID: t + ".deleted", Type: t, Deleted: true})
		}
	}
	if len(job.Request.Ignored) > 0 {
		if err := s.writeOutcomes(ctx, job.ID, "request", 0, "", job.Request.Ignored); err != nil {
			return nil, &RetryableError{Msg: fmt.Sprintf("plan: write lenient warnings: %v", err)}
		}
	}
	job, err = s.jobs.Transition(ctx, job.ID, Transition{
		From: []Status{StatusAccepted}, To: StatusInProgress, Units: units,
	})
	if err != nil {
		var c *ConflictError
		if errors.As(err, &c) && c.Current == StatusInProgress {
			// A concurrent Plan won; use its units.
			if job, err = s.jobs.Get(ctx, in.JobID); err == nil {
				return &PlanResult{JobID: job.ID, Units: job.Units}, nil
			}
		}
		if IsConflict(err) {
			return nil, &JobNotRunningError{Msg: "plan: " + err.Error()}
		}
		return nil, fmt.Errorf("plan: start job %s: %w", in.JobID, err)
	}
	log.InfoContext(ctx, "planned", "units", len(units), "types", len(types))
	return &PlanResult{JobID: job.ID, Units: job.Units}, nil
}

// exportTypes is the list of types a job exports: the requested types, or
// all the source has (at patient and group level, those of the Patient
// compartment), limited to what the source has.
func (s *Steps) exportTypes(ctx context.Context, job *Job) ([]string, error) {
	have, err := s.source.Types(ctx)
	if err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, t := range have {
		has[t] = true
	}
	want := job.Request.Types
	if len(want) == 0 {
		want = have
	}
	var out []string
	for _, t := range want {
		if !has[t] {
			continue
		}
		if job.Request.Level != bulkdata.LevelSystem && !fhir.InPatientCompartment(t) {
			continue
		}
		out = append(out, t)
	}
	if associatedProvenance(job.Request) && has["Provenance"] && !slices.Contains(out, "Provenance") {
		out = append(out, "Provenance")
	}
	sort.Strings(out)
	return out, nil
}

// associatedProvenance reports whether a request asks for the Provenance of
// its resources (includeAssociatedData=RelevantProvenanceResources) while
// its _type leaves Provenance out. Without _type every Provenance in scope
// is exported anyway.
func associatedProvenance(req bulkdata.Request) bool {
	if len(req.Types) == 0 || slices.Contains(req.Types, "Provenance") {
		return false
	}
	return slices.Contains(req.IncludeAssociatedData, bulkdata.RelevantProvenanceResources)
}

// provenanceTargets is the set of types whose Provenance a Provenance unit
// keeps, or nil when it keeps all.
func provenanceTargets(job *Job, unit Unit) map[string]bool {
	if unit.Type != "Provenance" || !associatedProvenance(job.Request) {
		return nil
	}
	set := map[string]bool{}
	for _, u := range job.Units {
		if u.Type != "Provenance" && !u.Deleted {
			set[u.Type] = true
		}
	}
	return set
}

// query builds the Source query for one type of a job. The upper time bound
// is the job's transactionTime (or an earlier _until), so a later export
// with _since=transactionTime has neither gap nor overlap.
func (s *Steps) query(job *Job, typ string) Query {
	req := job.Request
	until := job.TransactionTime
	if req.Until != nil && req.Until.Before(until) {
		until = *req.Until
	}
	return Query{
		Level:       req.Level,
		GroupID:     req.GroupID,
		Patients:    req.Patients,
		Since:       req.Since,
		Until:       &until,
		TypeFilters: req.TypeFiltersFor(typ),
		Elements:    req.ElementsFor(typ),
	}
}

// FileKey is where a unit's seq-th output file is stored.
func FileKey(jobID, unitID, typ string, seq int) string {
	return fmt.Sprintf("%s/%s/%s.%04d.ndjson", jobID, unitID, typ, seq)
}

// errorKey is where the error records of the chunk starting at (seq,
// source position) go. Both are part of the key: a chunk that wrote no
// output leaves seq unchanged for the next one.
func errorKey(jobID, unitID string, seq int, source string) string {
	h := fnv.New32a()
	h.Write([]byte(source))
	return fmt.Sprintf("%s/%s/errors.%04d.%08x.ndjson", jobID, unitID, seq, h.Sum32())
}

// ExportChunk streams one unit from its cursor into NDJSON files until the
// unit ends or the time budget runs out. Files roll at Config.MaxFileBytes
// or the job's smaller _maximumFileSize.
func (s *Steps) ExportChunk(ctx context.Context, in ChunkInput) (res *ChunkResult, err error) {
	log := s.log.With("job", in.JobID, "unit", in.Unit.ID, "step", "export")
	defer func() {
		if err != nil {
			s.cleanUpIfCancelled(in.JobID, log)
		}
	}()
	job, err := s.jobs.Get(ctx, in.JobID)
	if err != nil {
		return nil, fmt.Errorf("export chunk: get job %s: %w", in.JobID, err)
	}
	if job.Status != StatusInProgress {
		return nil, &JobNotRunningError{Msg: fmt.Sprintf("export chunk: job %s is %s", job.ID, job.Status)}
	}
	cur := Cursor{}
	if in.Cursor != nil {
		cur = *in.Cursor
	}
	start := cur
	budgetAt, hardAt := s.stopTimes(ctx)
	maxBytes, minBytes := s.fileLimits(job.Request)

	var rd Reader
	if in.Unit.Deleted {
		ds, ok := s.source.(DeletionSource)
		if !ok {
			return nil, fmt.Errorf("export chunk %s: the source lists no deletions", in.Unit.ID)
		}
		rd, err = ds.OpenDeleted(ctx, s.query(job, in.Unit.Type), in.Unit.Type, cur.Source)
	} else {
		rd, err = s.source.Open(ctx, s.query(job, in.Unit.Type), in.Unit.Type, in.Unit.Segment, cur.Source)
	}
	var changed *SourceChangedError
	if errors.As(err, &changed) {
		rd, err = emptyReader{cur.Source}, nil // the unit ends here, reported below
	}
	if err != nil {
		return nil, &RetryableError{Msg: fmt.Sprintf("export chunk %s: open source: %v", in.Unit.ID, err)}
	}
	defer rd.Close()

	var selector *fhir.ElementSelector
	if len(job.Request.Elements) > 0 && !in.Unit.Deleted {
		selector = fhir.NewElementSelector(job.Request.ElementPairs())
	}
	targets := provenanceTargets(job, in.Unit)

	w := &chunkWriter{steps: s, ctx: ctx, job: job, unit: in.Unit, cur: &cur, maxBytes: maxBytes}
	defer w.abort()
	var badRecords []fhir.Issue
	done := false
	lines := 0
	for {
		if lines > 0 && lines%512 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("export chunk %s: %w", in.Unit.ID, err)
			}
			// The budget stops a chunk once its open file holds
			// _minimumFileSize (a chunk commits its file when it stops);
			// the deadline stops it regardless.
			now := s.now()
			if !hardAt.IsZero() && now.After(hardAt) {
				break
			}
			if !budgetAt.IsZero() && now.After(budgetAt) && (w.w == nil || w.nbytes >= minBytes) {
				break
			}
		}
		line, err := rd.Next()
		if err == io.EOF {
			done = true
			break
		}
		var bad *BadRecordError
		if errors.As(err, &bad) {
			badRecords = append(badRecords, fhir.Issue{
				Severity:    fhir.SeverityError,
				Code:        fhir.CodeProcessing,
				Diagnostics: fmt.Sprintf("%s resource at %s was not exported: %s", in.Unit.Type, bad.Position, bad.Reason),
			})
			cur.Source = rd.Cursor()
			continue
		}
		if errors.As(err, &changed) {
			done = true
			break
		}
		if err != nil {
			return nil, &RetryableError{Msg: fmt.Sprintf("export chunk %s: read source: %v", in.Unit.ID, err)}
		}
		switch {
		case in.Unit.Deleted:
			line = deletionBundle(line)
		case targets != nil && !fhir.TargetsAnyType(line, targets):
			cur.Source = rd.Cursor()
			continue
		case selector != nil:
			if line, err = selector.Subset(in.Unit.Type, line); err != nil {
				return nil, fmt.Errorf("export chunk %s: %w", in.Unit.ID, err)
			}
		}
		if err := w.writeLine(line); err != nil {
			return nil, err
		}
		cur.Source = rd.Cursor()
		lines++
	}
	if err := w.commit(); err != nil {
		return nil, err
	}
	if changed != nil {
		badRecords = append(badRecords, changed.issue(in.Unit.Type))
	}
	if len(badRecords) > 0 {
		if err := s.writeOutcomes(ctx, job.ID, in.Unit.ID, start.Seq, start.Source, badRecords); err != nil {
			return nil, &RetryableError{Msg: fmt.Sprintf("export chunk %s: write errors: %v", in.Unit.ID, err)}
		}
	}
	prog := UnitProgress{Resources: cur.Resources, Bytes: cur.Bytes, Files: cur.Files, Done: done, Cursor: &cur}
	if err := s.jobs.SaveProgress(ctx, job.ID, in.Unit.ID, prog); err != nil {
		if IsConflict(err) {
			// Cancelled (or failed) while this chunk ran; a cancelled job's
			// files are removed on the way out.
			return nil, &JobNotRunningError{Msg: "export chunk: " + err.Error()}
		}
		return nil, &RetryableError{Msg: fmt.Sprintf("export chunk %s: save progress: %v", in.Unit.ID, err)}
	}
	log.DebugContext(ctx, "chunk", "resources", cur.Resources-start.Resources, "done", done)
	return &ChunkResult{JobID: job.ID, Unit: in.Unit, Cursor: &cur, Done: done}, nil
}

// cleanUpIfCancelled deletes a job's files when a chunk failed (or was
// interrupted) after the job was cancelled: files it committed before it
// stopped would otherwise outlive the cancel. It uses its own context, as
// the chunk's may be the reason it stopped.
func (s *Steps) cleanUpIfCancelled(jobID string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := s.jobs.Get(ctx, jobID)
	if err != nil || job.Status != StatusCancelled {
		return
	}
	if err := s.files.DeleteJob(ctx, jobID); err != nil {
		log.WarnContext(ctx, "delete files of cancelled job", "err", err)
	}
}

// stopTimes are when a chunk stops taking new resources: budgetAt for the
// chunk budget, hardAt for the context deadline less the margin (zero:
// never).
func (s *Steps) stopTimes(ctx context.Context) (budgetAt, hardAt time.Time) {
	if s.cfg.ChunkBudget > 0 {
		budgetAt = s.now().Add(s.cfg.ChunkBudget)
	}
	if dl, ok := ctx.Deadline(); ok {
		hardAt = dl.Add(-s.cfg.DeadlineMargin)
	}
	return budgetAt, hardAt
}

// fileLimits are the size a job's output files roll at (the server's,
// or a smaller _maximumFileSize) and the size a chunk fills its open file
// to before its budget stops it (_minimumFileSize, at most the former).
func (s *Steps) fileLimits(req bulkdata.Request) (maxBytes, minBytes int64) {
	maxBytes = s.cfg.MaxFileBytes
	if req.MaxFileSize > 0 && req.MaxFileSize < maxBytes {
		maxBytes = req.MaxFileSize
	}
	return maxBytes, min(req.MinFileSize, maxBytes)
}

// chunkWriter writes lines into rolling files and records each file.
type chunkWriter struct {
	steps *Steps
	ctx   context.Context
	job   *Job
	unit  Unit
	cur   *Cursor

	maxBytes int64

	w             FileWriter
	count, nbytes int64
}

func (c *chunkWriter) writeLine(line []byte) error {
	size := int64(len(line)) + 1
	if c.w != nil && c.nbytes > 0 && c.nbytes+size > c.maxBytes {
		if err := c.commit(); err != nil {
			return err
		}
	}
	if c.w == nil {
		key := FileKey(c.job.ID, c.unit.ID, c.unit.Type, c.cur.Seq)
		w, err := c.steps.files.Create(c.ctx, key)
		if err != nil {
			return &RetryableError{Msg: fmt.Sprintf("create %s: %v", key, err)}
		}
		c.w, c.count, c.nbytes = w, 0, 0
	}
	if _, err := c.w.Write(line); err != nil {
		return &RetryableError{Msg: fmt.Sprintf("write %s: %v", c.unit.ID, err)}
	}
	if _, err := c.w.Write(newline); err != nil {
		return &RetryableError{Msg: fmt.Sprintf("write %s: %v", c.unit.ID, err)}
	}
	c.count++
	c.nbytes += size
	return nil
}

var newline = []byte{'\n'}

// deletionBundle is the deleted-file line for one deleted resource: a
// transaction Bundle with one DELETE entry.
func deletionBundle(ref []byte) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":%q}}]}`, ref)
}

// commit finishes the current file (if any), records it and advances the
// cursor's file sequence.
func (c *chunkWriter) commit() error {
	if c.w == nil {
		return nil
	}
	w := c.w
	c.w = nil
	if err := w.Commit(); err != nil {
		return &RetryableError{Msg: fmt.Sprintf("commit %s: %v", c.unit.ID, err)}
	}
	f := File{
		Key: FileKey(c.job.ID, c.unit.ID, c.unit.Type, c.cur.Seq), Kind: KindOutput, Type: c.unit.Type,
		Count: c.count, Bytes: c.nbytes, Unit: c.unit.ID, Seq: c.cur.Seq,
	}
	if c.unit.Deleted {
		f.Kind, f.Type = KindDeleted, "Bundle"
	}
	if err := c.steps.jobs.PutFile(c.ctx, c.job.ID, f); err != nil {
		return &RetryableError{Msg: fmt.Sprintf("record %s: %v", f.Key, err)}
	}
	c.cur.Seq++
	c.cur.Files++
	c.cur.Resources += c.count
	c.cur.Bytes += c.nbytes
	return nil
}

func (c *chunkWriter) abort() {
	if c.w != nil {
		_ = c.w.Abort()
		c.w = nil
	}
}

// writeOutcomes writes issues as an NDJSON file of OperationOutcomes (one
// per issue) and records it as an error file.
func (s *Steps) writeOutcomes(ctx context.Context, jobID, unitID string, seq int, pos string, issues []fhir.Issue) error {
	key := errorKey(jobID, unitID, seq, pos)
	w, err := s.files.Create(ctx, key)
	if err != nil {
		return err
	}
	var n int64
	for _, is := range issues {
		b := append(fhir.NewOutcome(is).JSON(), '\n')
		if _, err := w.Write(b); err != nil {
			_ = w.Abort()
			return err
		}
		n += int64(len(b))
	}
	if err := w.Commit(); err != nil {
		return err
	}
	return s.jobs.PutFile(ctx, jobID, File{
		Key: key, Kind: KindError, Type: "OperationOutcome", Count: int64(len(issues)), Bytes: n, Unit: unitID, Seq: seq,
	})
}

// Finalize checks every unit is done and completes the job. The retention
// clock starts now. Called again on a completed job, it reports the same.
func (s *Steps) Finalize(ctx context.Context, in JobRef) (*FinalizeResult, error) {
	job, err := s.jobs.Get(ctx, in.JobID)
	if err != nil {
		return nil, fmt.Errorf("finalize: get job %s: %w", in.JobID, err)
	}
	files, err := s.jobs.Files(ctx, in.JobID)
	if err != nil {
		return nil, &RetryableError{Msg: fmt.Sprintf("finalize: list files of %s: %v", in.JobID, err)}
	}
	res := &FinalizeResult{JobID: job.ID}
	for _, f := range files {
		if f.Kind == KindOutput {
			res.Files++
			res.Resources += f.Count
			res.Bytes += f.Bytes
		}
	}
	if job.Status == StatusCompleted {
		return res, nil
	}
	if job.Status != StatusInProgress {
		return nil, &JobNotRunningError{Msg: fmt.Sprintf("finalize: job %s is %s", job.ID, job.Status)}
	}
	for _, u := range job.Units {
		if !job.Progress[u.ID].Done {
			return nil, fmt.Errorf("finalize: job %s: unit %s is not done", job.ID, u.ID)
		}
	}
	now := s.now().UTC()
	expires := now.Add(s.cfg.Retention)
	if _, err := s.jobs.Transition(ctx, job.ID, Transition{
		From: []Status{StatusInProgress}, To: StatusCompleted, CompletedAt: &now, ExpiresAt: &expires,
	}); err != nil {
		if IsConflict(err) {
			return nil, &JobNotRunningError{Msg: "finalize: " + err.Error()}
		}
		return nil, &RetryableError{Msg: fmt.Sprintf("finalize: complete job %s: %v", job.ID, err)}
	}
	s.log.InfoContext(ctx, "completed", "job", job.ID, "files", res.Files, "resources", res.Resources, "bytes", res.Bytes)
	return res, nil
}

// Fail marks a live job failed with an OperationOutcome. The runner's error
// text stays in the logs; the client sees a generic, transient-free reason.
// A job that is no longer live is left as it is.
func (s *Steps) Fail(ctx context.Context, in FailInput) error {
	s.log.ErrorContext(ctx, "export failed", "job", in.JobID, "error", in.Error, "cause", in.Cause)
	outcome := fhir.Outcome(fhir.SeverityError, fhir.CodeException,
		fmt.Sprintf("the export failed and was stopped (job %s); start a new export", in.JobID))
	expires := s.now().UTC().Add(s.cfg.Retention)
	t := Transition{
		From: []Status{StatusAccepted, StatusInProgress}, To: StatusFailed,
		Outcome: &outcome, FailStatus: 500, ExpiresAt: &expires,
	}
	_, err := s.jobs.Transition(ctx, in.JobID, t)
	if err != nil && !IsConflict(err) && !errors.Is(err, ErrJobNotFound) {
		// The failure could not be recorded: often the disk is full with
		// this very job's output. A failed job's files are never served,
		// so free them and try once more.
		if derr := s.files.DeleteJob(ctx, in.JobID); derr == nil {
			_, err = s.jobs.Transition(ctx, in.JobID, t)
		}
	}
	if err != nil && !IsConflict(err) && !errors.Is(err, ErrJobNotFound) {
		return fmt.Errorf("fail job %s: %w", in.JobID, err)
	}
	return nil
}
