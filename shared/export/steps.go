package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
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

// PlanResult is Plan's output: where the plan object is and how many units
// it holds. The units themselves never travel between states: the runner
// reads them from the plan object (on AWS, the Distributed Map's
// ItemReader).
type PlanResult struct {
	JobID   string `json:"jobId"`
	PlanKey string `json:"planKey"`
	Units   int    `json:"units"`
}

// PlanKey is the FileStore key of a job's plan object: a JSON array of its
// Units.
func PlanKey(jobID string) string { return jobID + "/plan.json" }

// batchKey is where the i-th patient batch of a job is stored.
func batchKey(jobID string, i int) string { return fmt.Sprintf("%s/batches/%06d.json", jobID, i) }

// batchIndexKey is where the first patient of every batch is stored.
func batchIndexKey(jobID string) string { return jobID + "/batches/index.json" }

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

// Plan turns a job's request into work units, stores them as the plan
// object (with the patient batches of a patient or group export, resolved
// here once) and moves the job to in-progress. Called again for a job
// already planned, it returns the same plan.
func (s *Steps) Plan(ctx context.Context, in JobRef) (*PlanResult, error) {
	log := s.log.With("job", in.JobID, "step", "plan")
	job, err := s.jobs.Get(ctx, in.JobID)
	if err != nil {
		return nil, retryable(err, "plan: get job %s", in.JobID)
	}
	switch job.Status {
	case StatusInProgress:
		if job.Plan != nil {
			return &PlanResult{JobID: job.ID, PlanKey: job.Plan.Key, Units: job.Plan.Units}, nil
		}
	case StatusAccepted:
	default:
		return nil, &JobNotRunningError{Msg: fmt.Sprintf("plan: job %s is %s", job.ID, job.Status)}
	}

	types, err := s.exportTypes(ctx, job)
	if err != nil {
		return nil, retryable(err, "plan: list source types")
	}
	batches, err := s.patientBatches(ctx, job)
	if err != nil {
		return nil, err
	}
	units := []Unit{}
	var groups []UnitGroup
	if job.Request.OrganizeOutputBy != "" {
		// One unit per patient batch, across every type (blocks.go).
		for bi, batch := range batches {
			if batch != nil {
				units = append(units, Unit{ID: UnitID(blocksGroup, len(units)), Blocks: true, Batch: batchKey(job.ID, bi)})
			}
		}
		groups = []UnitGroup{{Name: blocksGroup, Units: len(units)}}
	}
	for _, t := range types {
		if job.Request.OrganizeOutputBy != "" {
			break
		}
		n := 0
		for bi, batch := range batches {
			q := s.query(job, t)
			bkey := ""
			if batch != nil {
				q.Level, q.Patients, bkey = bulkdata.LevelPatient, batch, batchKey(job.ID, bi)
			}
			segs, err := s.source.Plan(ctx, q, t)
			if err != nil {
				return nil, retryable(err, "plan %s", t)
			}
			for _, seg := range segs {
				units = append(units, Unit{ID: UnitID(t, n), Type: t, Segment: seg, Batch: bkey})
				n++
			}
		}
		group := UnitGroup{Name: t, Units: n}
		// Deletions are listed for system exports with _since, when the
		// source keeps them; a deleted resource cannot be placed in a
		// patient's compartment any more.
		if ds, ok := s.source.(DeletionSource); ok && job.Request.Since != nil &&
			job.Request.Level == bulkdata.LevelSystem && ds.ListsDeletions(ctx, t) {
			units = append(units, Unit{ID: DeletedUnitID(t), Type: t, Deleted: true})
			group.Deleted = true
		}
		groups = append(groups, group)
	}
	if len(job.Request.Ignored) > 0 {
		if err := s.writeOutcomes(ctx, job.ID, "request", 0, "", job.Request.Ignored); err != nil {
			return nil, retryable(err, "plan: write lenient warnings")
		}
	}
	if err := s.putBatches(ctx, job.ID, batches); err != nil {
		return nil, err
	}
	ref := &PlanRef{Key: PlanKey(job.ID), Units: len(units), Types: types, Groups: groups}
	if len(batches) > 1 {
		// The first patient of each batch: a chunk that meets a resource
		// of several patients finds which batch owns it.
		firsts := make([]string, len(batches))
		for i, b := range batches {
			firsts[i] = b[0]
		}
		if err := s.putJSON(ctx, batchIndexKey(job.ID), firsts); err != nil {
			return nil, retryable(err, "plan: store the batch index")
		}
		ref.Batches = len(batches)
	}
	if err := s.putJSON(ctx, ref.Key, units); err != nil {
		return nil, retryable(err, "plan: store the plan")
	}
	job, err = s.jobs.Transition(ctx, job.ID, Transition{
		From: []Status{StatusAccepted}, To: StatusInProgress, Plan: ref,
	})
	if err != nil {
		var c *ConflictError
		if errors.As(err, &c) && c.Current == StatusInProgress {
			// A concurrent Plan won; its plan object is the same.
			if job, err = s.jobs.Get(ctx, in.JobID); err == nil && job.Plan != nil {
				return &PlanResult{JobID: job.ID, PlanKey: job.Plan.Key, Units: job.Plan.Units}, nil
			}
		}
		return nil, retryable(err, "plan: start job %s", in.JobID)
	}
	log.InfoContext(ctx, "planned", "units", len(units), "types", len(types), "batches", len(batches))
	return &PlanResult{JobID: job.ID, PlanKey: ref.Key, Units: ref.Units}, nil
}

// patientBatches resolves the patients of a patient or group export once
// (the Group's active members, limited to the request's patients) and
// splits them into sorted batches, so members cannot shift between batches
// while the export runs. A nil batch list entry means "no patient list":
// the system export, or a Patient export of every patient.
func (s *Steps) patientBatches(ctx context.Context, job *Job) ([][]string, error) {
	req := job.Request
	var patients []string
	switch {
	case req.Level == bulkdata.LevelGroup:
		members, err := s.source.GroupMembers(ctx, req.GroupID)
		if errors.Is(err, ErrGroupNotFound) {
			return nil, fmt.Errorf("plan: Group/%s is gone: %w", req.GroupID, err)
		}
		if err != nil {
			return nil, retryable(err, "plan: read Group/%s", req.GroupID)
		}
		patients = members
		if len(req.Patients) > 0 {
			want := map[string]bool{}
			for _, p := range req.Patients {
				want[p] = true
			}
			patients = slices.DeleteFunc(slices.Clone(members), func(m string) bool { return !want[m] })
		}
	case req.Level == bulkdata.LevelPatient && len(req.Patients) > 0:
		patients = slices.Clone(req.Patients)
	case req.OrganizeOutputBy != "":
		// Blocks are made per batch of patients: every patient there is.
		all, err := s.allPatients(ctx, job)
		if err != nil {
			return nil, err
		}
		patients = all
	default:
		return [][]string{nil}, nil
	}
	slices.Sort(patients)
	patients = slices.Compact(patients)
	size := s.cfg.PatientBatch
	if b, ok := s.source.(PatientBatcher); ok && b.PatientBatch() > 0 {
		size = b.PatientBatch()
	}
	var out [][]string
	for start := 0; start < len(patients); start += size {
		out = append(out, patients[start:min(start+size, len(patients))])
	}
	return out, nil
}

// allPatients lists the id of every Patient there is at the export's
// transactionTime, for an organized export with no patient list. _since,
// _until and _typeFilter do not narrow it: they filter each type on its own
// (a patient not updated since _since, or updated after _until, still heads
// the block of its resources in the window).
func (s *Steps) allPatients(ctx context.Context, job *Job) ([]string, error) {
	q := s.query(job, "Patient")
	q.Level, q.Patients, q.Since, q.TypeFilters, q.Elements = bulkdata.LevelPatient, nil, nil, nil, nil
	tt := job.TransactionTime
	q.Until = &tt
	segs, err := s.source.Plan(ctx, q, "Patient")
	if err != nil {
		return nil, retryable(err, "plan: list patients")
	}
	var ids []string
	for _, seg := range segs {
		rd, err := s.source.Open(ctx, q, "Patient", seg, "")
		if err != nil {
			return nil, retryable(err, "plan: list patients")
		}
		if err := EachResource(rd, func(line []byte) bool {
			if h, ok := fhir.Peek(line); ok && h.ResourceType == "Patient" && h.ID != "" {
				ids = append(ids, h.ID)
			}
			return true
		}); err != nil {
			return nil, retryable(err, "plan: list patients")
		}
	}
	return ids, nil
}

// putBatches stores the patient batches, several at once: a Group of a
// million patients has 20,000 batches of 50, too many to write one after
// the other within Plan's time.
func (s *Steps) putBatches(ctx context.Context, jobID string, batches [][]string) error {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		sem   = make(chan struct{}, 16)
	)
	for i, b := range batches {
		if b == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.putJSON(ctx, batchKey(jobID, i), b); err != nil {
				once.Do(func() { first = retryable(err, "plan: store patient batch %d", i) })
			}
		}()
	}
	wg.Wait()
	return first
}

// batchOwner decides which batch exports a resource of several selected
// patients (a Group, a shared Encounter): the batch of the first of them,
// so it is exported once, not by every batch it is found in.
type batchOwner struct {
	steps   *Steps
	jobID   string
	first   string // this batch's first patient
	firsts  []string
	batches map[int]map[string]bool
}

// owns reports whether no selected patient the resource references sorts
// before this batch.
func (o *batchOwner) owns(ctx context.Context, typ string, line []byte) (bool, error) {
	var earlier []string
	fhir.CompartmentPatients(typ, line, func(id string) bool {
		if id < o.first {
			earlier = append(earlier, id)
		}
		return true
	})
	// Smallest first: the owning batch is usually the first one looked
	// at, and each batch is read at most once per chunk.
	slices.Sort(earlier)
	for _, id := range earlier {
		sel, err := o.selected(ctx, id)
		if err != nil || sel {
			return false, err
		}
	}
	return true, nil
}

// selected reports whether id is in an earlier batch.
func (o *batchOwner) selected(ctx context.Context, id string) (bool, error) {
	if o.firsts == nil {
		if err := o.steps.getJSON(ctx, batchIndexKey(o.jobID), &o.firsts); err != nil {
			return false, err
		}
	}
	i := sort.SearchStrings(o.firsts, id)
	if i == len(o.firsts) || o.firsts[i] != id {
		i-- // the batch whose range holds id
	}
	if i < 0 {
		return false, nil
	}
	set, ok := o.batches[i]
	if !ok {
		var ids []string
		if err := o.steps.getJSON(ctx, batchKey(o.jobID, i), &ids); err != nil {
			return false, err
		}
		set = map[string]bool{}
		for _, p := range ids {
			set[p] = true
		}
		o.batches[i] = set
	}
	return set[id], nil
}

// PatientBatcher is a Source that reads patients in batches of at most
// PatientBatch ids (one compartment search names that many); Plan makes one
// unit per batch. Other sources get Config.PatientBatch.
type PatientBatcher interface {
	PatientBatch() int
}

// putJSON stores v as a committed object at key.
func (s *Steps) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w, err := s.files.Create(ctx, key)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Commit()
}

// maxInlineCursor is the longest source position a cursor carries itself.
const maxInlineCursor = 2048

// putText stores text as a committed object at key.
func (s *Steps) putText(ctx context.Context, key, text string) error {
	w, err := s.files.Create(ctx, key)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, text); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Commit()
}

// getText reads the object at key.
func (s *Steps) getText(ctx context.Context, key string) (string, error) {
	r, err := s.files.Open(ctx, key)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// getJSON reads the object at key into v.
func (s *Steps) getJSON(ctx context.Context, key string, v any) error {
	r, err := s.files.Open(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	return json.NewDecoder(r).Decode(v)
}

// Units reads a job's plan object (the embedded runner's ItemReader).
func (s *Steps) Units(ctx context.Context, plan *PlanResult) ([]Unit, error) {
	var units []Unit
	if err := s.getJSON(ctx, plan.PlanKey, &units); err != nil {
		return nil, retryable(err, "read plan %s", plan.PlanKey)
	}
	if len(units) != plan.Units {
		return nil, fmt.Errorf("plan %s holds %d units, want %d", plan.PlanKey, len(units), plan.Units)
	}
	return units, nil
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
		if d, ok := s.source.(defaultTyper); ok {
			if want, err = d.DefaultTypes(ctx); err != nil {
				return nil, err
			}
		}
	}
	var out []string
	for _, t := range want {
		if !has[t] {
			continue
		}
		if (job.Request.Level != bulkdata.LevelSystem || job.Request.OrganizeOutputBy != "") && !fhir.InPatientCompartment(t) {
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

// defaultTyper is a Source that exports fewer types than it has when _type
// does not name them (an upstream's conformance resources, types whose
// search it refuses).
type defaultTyper interface {
	DefaultTypes(ctx context.Context) ([]string, error)
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
	if job.Plan != nil {
		for _, t := range job.Plan.Types {
			if t != "Provenance" {
				set[t] = true
			}
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
		Upstream:    job.Upstream,
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
		return nil, retryable(err, "export chunk: get job %s", in.JobID)
	}
	if job.Status != StatusInProgress {
		return nil, &JobNotRunningError{Msg: fmt.Sprintf("export chunk: job %s is %s", job.ID, job.Status)}
	}
	if in.Unit.Blocks {
		return s.exportBlocks(ctx, job, in)
	}
	q := s.query(job, in.Unit.Type)
	var owner *batchOwner
	if in.Unit.Batch != "" {
		var batch []string
		if err := s.getJSON(ctx, in.Unit.Batch, &batch); err != nil {
			return nil, retryable(err, "export chunk %s: read patient batch", in.Unit.ID)
		}
		q.Level, q.Patients = bulkdata.LevelPatient, batch
		if job.Plan != nil && job.Plan.Batches > 1 && len(batch) > 0 {
			owner = &batchOwner{steps: s, jobID: job.ID, first: batch[0], batches: map[int]map[string]bool{}}
		}
	}
	cur, err := s.cursorIn(ctx, in)
	if err != nil {
		return nil, err
	}
	start := cur
	budgetAt, hardAt := s.stopTimes(ctx)
	maxBytes, minBytes := s.fileLimits(job.Request)
	// The source learns when the chunk stops at the latest, so a read
	// that would wait past it (on a throttled upstream) ends the chunk
	// with its cursor.
	readCtx := ctx
	if stopAt := earliest(budgetAt, hardAt); !stopAt.IsZero() {
		readCtx = WithStopTime(ctx, stopAt)
	}

	var rd Reader
	if in.Unit.Deleted {
		ds, ok := s.source.(DeletionSource)
		if !ok {
			return nil, fmt.Errorf("export chunk %s: the source lists no deletions", in.Unit.ID)
		}
		rd, err = ds.OpenDeleted(readCtx, q, in.Unit.Type, cur.Source)
	} else {
		rd, err = s.source.Open(readCtx, q, in.Unit.Type, in.Unit.Segment, cur.Source)
	}
	var changed *SourceChangedError
	if errors.As(err, &changed) {
		rd, err = emptyReader{cur.Source}, nil // the unit ends here, reported below
	}
	if err != nil {
		return nil, retryable(err, "export chunk %s: open source", in.Unit.ID)
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
	var subsetBuf []byte
	done := false
	lines := 0
	var sinceCheck int64 // bytes written since the clock was last read
	for {
		// The clock is read every 512 resources, and sooner after large
		// ones, so the margin before the deadline holds whatever the
		// size of a resource.
		if lines > 0 && (lines%512 == 0 || sinceCheck >= checkBytes) {
			sinceCheck = 0
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
		// Only a failed read is looked at further: declared here, the
		// error's target no longer goes to the heap for every line.
		if err != nil {
			var bad *BadRecordError
			if errors.As(err, &bad) {
				is := fhir.Issue{
					Severity:    fhir.SeverityError,
					Code:        fhir.CodeProcessing,
					Diagnostics: fmt.Sprintf("%s resource at %s was not exported: %s", in.Unit.Type, bad.Position, bad.Reason),
				}
				if bad.Warning {
					is.Severity, is.Diagnostics = fhir.SeverityWarning, fmt.Sprintf("%s at %s: %s", in.Unit.Type, bad.Position, bad.Reason)
				}
				badRecords = append(badRecords, is)
				cur.Source = rd.Cursor()
				continue
			}
			if errors.As(err, &changed) {
				done = true
				break
			}
			if errors.Is(err, ErrOutOfTime) && ctx.Err() == nil {
				// The chunk ran out of time inside a read (a throttled
				// upstream): it ends here with its cursor, the next chunk
				// goes on from it.
				break
			}
			return nil, retryable(err, "export chunk %s: read source", in.Unit.ID)
		}
		switch {
		case in.Unit.Deleted:
			line = deletionBundle(line)
		case targets != nil && !fhir.TargetsAnyType(line, targets):
			cur.Source = rd.Cursor()
			continue
		case owner != nil:
			mine, err := owner.owns(ctx, in.Unit.Type, line)
			if err != nil {
				return nil, retryable(err, "export chunk %s: read the batch index", in.Unit.ID)
			}
			if !mine {
				cur.Source = rd.Cursor()
				continue
			}
		case selector != nil:
			// writeLine copies the line into the file's block, so one
			// buffer serves every subset line of the chunk.
			if subsetBuf, err = selector.AppendSubset(subsetBuf[:0], in.Unit.Type, line); err != nil {
				return nil, fmt.Errorf("export chunk %s: %w", in.Unit.ID, err)
			}
			line = subsetBuf
		}
		if err := w.writeLine(line); err != nil {
			return nil, err
		}
		cur.Source = rd.Cursor()
		lines++
		sinceCheck += int64(len(line))
	}
	if err := w.commit(); err != nil {
		return nil, err
	}
	if changed != nil {
		badRecords = append(badRecords, changed.issue(in.Unit.Type))
	}
	if len(badRecords) > 0 {
		if err := s.writeOutcomes(ctx, job.ID, in.Unit.ID, start.Seq, start.Source, badRecords); err != nil {
			return nil, retryable(err, "export chunk %s: write errors", in.Unit.ID)
		}
	}
	if err := s.cursorOut(ctx, job.ID, in.Unit.ID, &cur); err != nil {
		return nil, err
	}
	prog := UnitProgress{Resources: cur.Resources, Bytes: cur.Bytes, Files: cur.Files, Done: done, Cursor: &cur}
	if err := s.jobs.SaveProgress(ctx, job.ID, in.Unit.ID, prog); err != nil {
		// A conflict: cancelled (or failed) while this chunk ran; a
		// cancelled job's files are removed on the way out.
		return nil, retryable(err, "export chunk %s: save progress", in.Unit.ID)
	}
	log.DebugContext(ctx, "chunk", "resources", cur.Resources-start.Resources, "done", done)
	return &ChunkResult{JobID: job.ID, Unit: in.Unit, Cursor: &cur, Done: done}, nil
}

// cursorIn is the cursor a chunk starts from, its source position read
// back when it went by reference.
func (s *Steps) cursorIn(ctx context.Context, in ChunkInput) (Cursor, error) {
	cur := Cursor{}
	if in.Cursor != nil {
		cur = *in.Cursor
	}
	if cur.SourceRef != "" {
		var err error
		if cur.Source, err = s.getText(ctx, cur.SourceRef); err != nil {
			return cur, retryable(err, "export chunk %s: read cursor", in.Unit.ID)
		}
		cur.SourceRef = ""
	}
	return cur, nil
}

// cursorOut sends a long source position by reference, so neither the
// state nor the unit's item grows with it, and every position of a source
// that asks for it (ReferencedCursors). The key is derived from the
// position: a retried chunk writes the same object.
func (s *Steps) cursorOut(ctx context.Context, jobID, unitID string, cur *Cursor) error {
	if len(cur.Source) <= maxInlineCursor && !cursorsByReference(s.source) {
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte(cur.Source))
	key := fmt.Sprintf("%s/%s/cursor.%016x.txt", jobID, unitID, h.Sum64())
	if err := s.putText(ctx, key, cur.Source); err != nil {
		return retryable(err, "export chunk %s: store cursor", unitID)
	}
	cur.Source, cur.SourceRef = "", key
	return nil
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

// earliest is the earlier of two times, zero meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
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
	// headers are the block headers among the open file's count lines: a
	// file's count is of resources, headers left out, as SMART's
	// reference server and bulk-data-client count them.
	headers int64
	// continues is the key of the file the open file's last block goes
	// on in (blocks units).
	continues string
}

func (c *chunkWriter) writeLine(line []byte) error {
	size := int64(len(line)) + 1
	if c.w != nil && c.nbytes > 0 && c.nbytes+size > c.maxBytes {
		if err := c.commit(); err != nil {
			return err
		}
	}
	return c.put(line)
}

// fileType is the type part of the unit's file keys.
func (c *chunkWriter) fileType() string {
	if c.unit.Blocks {
		return blocksGroup
	}
	return c.unit.Type
}

// put writes a line into the open file (opening one if none is).
func (c *chunkWriter) put(line []byte) error {
	size := int64(len(line)) + 1
	if c.w == nil {
		key := FileKey(c.job.ID, c.unit.ID, c.fileType(), c.cur.Seq)
		w, err := c.steps.files.Create(c.ctx, key)
		if err != nil {
			return retryable(err, "create %s", key)
		}
		c.w, c.count, c.nbytes, c.headers = newBlockWriter(w), 0, 0, 0
	}
	if _, err := c.w.Write(line); err != nil {
		return retryable(err, "write %s", c.unit.ID)
	}
	if _, err := c.w.Write(newline); err != nil {
		return retryable(err, "write %s", c.unit.ID)
	}
	c.count++
	c.nbytes += size
	return nil
}

var newline = []byte{'\n'}

// checkBytes is how much a chunk writes at most between two looks at the
// clock.
const checkBytes = 1 << 20

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
		return retryable(err, "commit %s", c.unit.ID)
	}
	f := File{
		Key: FileKey(c.job.ID, c.unit.ID, c.fileType(), c.cur.Seq), Kind: KindOutput, Type: c.unit.Type,
		Count: c.count - c.headers, Bytes: c.nbytes, Unit: c.unit.ID, Seq: c.cur.Seq, Continues: c.continues,
	}
	c.continues = ""
	if c.unit.Deleted {
		f.Kind, f.Type = KindDeleted, "Bundle"
	}
	if err := c.steps.jobs.PutFile(c.ctx, c.job.ID, f); err != nil {
		return retryable(err, "record %s", f.Key)
	}
	c.cur.Seq++
	c.cur.Files++
	c.cur.Resources += c.count - c.headers
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
// It reads the units' progress and the files with paginated store reads,
// never from the job record.
func (s *Steps) Finalize(ctx context.Context, in JobRef) (*FinalizeResult, error) {
	job, err := s.jobs.Get(ctx, in.JobID)
	if err != nil {
		return nil, retryable(err, "finalize: get job %s", in.JobID)
	}
	files, err := s.jobs.Files(ctx, in.JobID)
	if err != nil {
		return nil, retryable(err, "finalize: list files of %s", in.JobID)
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
	if job.Status != StatusInProgress || job.Plan == nil {
		return nil, &JobNotRunningError{Msg: fmt.Sprintf("finalize: job %s is %s", job.ID, job.Status)}
	}
	progress, err := s.jobs.Progress(ctx, in.JobID)
	if err != nil {
		return nil, retryable(err, "finalize: read progress of %s", in.JobID)
	}
	if done, _, _ := Totals(progress); done != job.Plan.Units {
		return nil, fmt.Errorf("finalize: job %s: %d of %d units are done", job.ID, done, job.Plan.Units)
	}
	now := s.now().UTC()
	expires := now.Add(s.cfg.Retention)
	if _, err := s.jobs.Transition(ctx, job.ID, Transition{
		From: []Status{StatusInProgress}, To: StatusCompleted, CompletedAt: &now, ExpiresAt: &expires,
	}); err != nil {
		return nil, retryable(err, "finalize: complete job %s", job.ID)
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
