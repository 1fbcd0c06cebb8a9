package export

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Service is what the HTTP API calls: kick-off, status and cancel.
type Service struct {
	jobs   JobStore
	files  FileStore
	runner Runner
	source Source
	cfg    Config
	now    func() time.Time
	newID  func() string
	log    *slog.Logger
	// admission, when set, may refuse a kick-off before a job is made.
	admission Admission
	// queue, when set, holds kick-offs until one of maxRunning running
	// places is free (queue.go).
	queue      Queue
	maxRunning int
	// observer, when set, hears of kick-offs and cancels (observer.go).
	observer Observer
}

// Admission decides whether a kick-off may start a job now: a storage
// reserve, a client's quota. A refusal is a *bulkdata.Error (503 or 429
// with Retry-After).
type Admission interface {
	Admit(ctx context.Context, owner string) error
}

// SetAdmission installs an admission check run at every kick-off.
func (s *Service) SetAdmission(a Admission) { s.admission = a }

// NewService returns a Service over the given ports.
func NewService(jobs JobStore, files FileStore, runner Runner, source Source, cfg Config, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{jobs: jobs, files: files, runner: runner, source: source, cfg: cfg.withDefaults(),
		now: time.Now, newID: NewJobID, log: log}
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Source returns the service's source (for metadata and Group reads).
func (s *Service) Source() Source { return s.source }

// NewJobID returns a random 128-bit job id in hex.
func NewJobID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("export: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// IdempotentJobID derives a job id from the owner and an idempotency key
// (such as API Gateway's request id), so a retried kick-off finds its job.
func IdempotentJobID(owner, key string) string {
	sum := sha256.Sum256([]byte(owner + "\x00" + key))
	return hex.EncodeToString(sum[:16])
}

// Kickoff checks a parsed request against the source, creates the job and
// starts it. Rejections are *bulkdata.Error values with a 4xx status. With an
// idempotency key, a repeated kick-off returns the job the first one made.
func (s *Service) Kickoff(ctx context.Context, owner string, req *bulkdata.Request, requestURL, idempotencyKey string) (*Job, error) {
	if !ValidOwner(owner) {
		return nil, bulkdata.NewError(http.StatusForbidden, fhir.CodeSecurity, "the client id cannot be used by this server")
	}
	if idempotencyKey != "" {
		if job, err := s.jobs.Get(ctx, IdempotentJobID(owner, idempotencyKey)); err == nil && job.Owner == owner {
			return job, nil
		}
	}
	probe, err := s.probe(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.checkAgainstSource(ctx, req); err != nil {
		return nil, err
	}
	if s.admission != nil {
		if err := s.admission.Admit(ctx, owner); err != nil {
			return nil, err
		}
	}
	capped, exact := s.jobs.(CappedCreator)
	if !exact {
		live, err := s.jobs.CountLive(ctx, owner)
		if err != nil {
			return nil, fmt.Errorf("kick-off: count live jobs: %w", err)
		}
		if live >= s.cfg.MaxLiveJobsPerOwner {
			return nil, s.tooMany()
		}
	}
	now := s.now().UTC()
	// The upper bound of every search is the upstream's clock when it
	// tells it: a clock of ours running ahead would miss nothing, but one
	// running behind would leave out what the upstream wrote meanwhile
	// from this export and from the next one's _since.
	txTime := now
	if !probe.Now.IsZero() {
		txTime = probe.Now.UTC()
	}
	id := s.newID()
	if idempotencyKey != "" {
		id = IdempotentJobID(owner, idempotencyKey)
	}
	job := &Job{
		ID:              id,
		Owner:           owner,
		Status:          StatusAccepted,
		Request:         *req,
		RequestURL:      requestURL,
		TransactionTime: txTime,
		Upstream:        probe.State,
		CreatedAt:       now,
		UpdatedAt:       now,
		ExpiresAt:       now.Add(s.cfg.MaxJobDuration + s.cfg.Retention),
	}
	if exact {
		err = capped.CreateCapped(ctx, job, s.cfg.MaxLiveJobsPerOwner)
	} else {
		err = s.jobs.Create(ctx, job)
	}
	if errors.Is(err, ErrTooManyLive) {
		return nil, s.tooMany()
	}
	if err != nil {
		if errors.Is(err, ErrJobExists) && idempotencyKey != "" {
			// A concurrent retry of the same kick-off created it.
			if existing, gerr := s.jobs.Get(ctx, id); gerr == nil && existing.Owner == owner {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("kick-off: create job: %w", err)
	}
	if s.queue != nil {
		if err := s.enqueue(ctx, job); err != nil {
			return nil, err
		}
	} else if err := s.runner.Start(ctx, job.ID); err != nil {
		s.log.ErrorContext(ctx, "start job", "job", job.ID, "err", err)
		return nil, s.failStart(ctx, job.ID)
	}
	s.log.InfoContext(ctx, "kick-off", "job", job.ID, "owner", owner, "level", req.Level, "types", len(req.Types))
	s.observe(ctx, job, EventAccepted)
	return job, nil
}

// tooMany is the 429 of a client at its cap of live jobs.
func (s *Service) tooMany() error {
	e := bulkdata.NewError(http.StatusTooManyRequests, fhir.CodeThrottled,
		fmt.Sprintf("this client already has %d exports queued or running; wait for one to finish or cancel one", s.cfg.MaxLiveJobsPerOwner))
	e.RetryAfter = 10 * time.Second
	return e
}

// checkAgainstSource applies the checks that depend on the source's data
// and features, as problems (4xx, or warnings under lenient handling).
func (s *Service) checkAgainstSource(ctx context.Context, req *bulkdata.Request) error {
	if _, ok := s.source.(ProbingSource); !ok {
		if r, ok := s.source.(readySource); ok {
			if err := r.Ready(ctx); err != nil {
				return s.unavailable(ctx, "check the source", err)
			}
		}
	}
	var probs bulkdata.Problems
	var notFound []string
	if (req.Level != bulkdata.LevelSystem || req.OrganizeOutputBy != "") && len(req.Types) > 0 {
		where := fmt.Sprintf("at %s level", req.Level)
		if req.OrganizeOutputBy != "" {
			// N-03: resources that reference no Patient may be left out of
			// an export organized by Patient; bulkfhir leaves them out.
			where = "in an export organized by Patient"
		}
		var kept []string
		for _, t := range req.Types {
			if fhir.InPatientCompartment(t) {
				kept = append(kept, t)
				continue
			}
			probs.Add(fhir.CodeNotSupported, "_type", fmt.Sprintf("%s is not in the Patient compartment, so it cannot be exported %s", t, where))
		}
		if len(kept) == 0 {
			// An empty list would mean every type: never wider than asked.
			probs.Refuse(fhir.CodeNotSupported, "_type", fmt.Sprintf("names no type of the Patient compartment, so nothing can be exported %s", where))
		}
		req.Types = kept
	}
	if len(req.TypeFilters) > 0 && !s.source.Caps().TypeFilter {
		// Refused even under lenient handling: without the filter the
		// export would be wider than asked.
		probs.Add(fhir.CodeNotSupported, "_typeFilter", "is not supported by this server's data source; remove it to export the types unfiltered")
		req.TypeFilters = nil
	}
	if err := s.checkTypeFilters(ctx, req, &probs); err != nil {
		return err
	}
	if req.MaxFileSize > 0 && req.MaxFileSize < s.cfg.MinFileBytes {
		probs.Add(fhir.CodeNotSupported, "_maximumFileSize", fmt.Sprintf(
			"%d bytes is below the smallest file size this server makes (%d bytes); ask for at least that", req.MaxFileSize, s.cfg.MinFileBytes))
		req.MaxFileSize = 0
	}
	// RelevantProvenanceResources is honoured; when values conflict the
	// least restrictive wins, so LatestProvenanceResources beside it is
	// covered. Alone, Latest (a subset) and custom codes are not supported.
	// "_relevantProvenance" is accepted as this server's custom code for
	// the same set.
	relevant := slices.Contains(req.IncludeAssociatedData, bulkdata.RelevantProvenanceResources) ||
		slices.Contains(req.IncludeAssociatedData, relevantProvenanceCustom)
	for _, code := range req.IncludeAssociatedData {
		if code == bulkdata.RelevantProvenanceResources || code == relevantProvenanceCustom ||
			(relevant && code == bulkdata.LatestProvenanceResources) {
			continue
		}
		probs.Add(fhir.CodeNotSupported, "includeAssociatedData", fmt.Sprintf("%q is not supported; RelevantProvenanceResources is", code))
	}
	req.IncludeAssociatedData = nil
	if relevant {
		req.IncludeAssociatedData = []string{bulkdata.RelevantProvenanceResources}
	}

	if req.Level == bulkdata.LevelGroup {
		members, err := s.source.GroupMembers(ctx, req.GroupID)
		if errors.Is(err, ErrGroupNotFound) {
			return bulkdata.NewError(http.StatusNotFound, fhir.CodeNotFound, fmt.Sprintf("Group/%s: no such Group", req.GroupID))
		}
		if err != nil {
			return s.unavailable(ctx, "read group", err)
		}
		if len(req.Patients) > 0 {
			in := map[string]bool{}
			for _, m := range members {
				in[m] = true
			}
			for _, p := range req.Patients {
				if !in[p] {
					notFound = append(notFound, fmt.Sprintf("Patient/%s is not a member of Group/%s; nothing is exported for it", p, req.GroupID))
				}
			}
		}
	} else if len(req.Patients) > 0 {
		missing, err := s.source.MissingPatients(ctx, req.Patients)
		if err != nil {
			return s.unavailable(ctx, "look up patients", err)
		}
		for _, m := range missing {
			notFound = append(notFound, fmt.Sprintf("Patient/%s: no such Patient; nothing is exported for it", m))
		}
	}
	// Unknown and non-member patients are not an error (issue 14): the
	// known ones are exported and each unknown one is reported in the
	// manifest's error files. They stay in req.Patients, where they select
	// nothing, so the list can never become empty (which would mean every
	// patient).
	for _, d := range notFound {
		req.Ignored = append(req.Ignored, fhir.Issue{
			Severity: fhir.SeverityWarning, Code: fhir.CodeNotFound, Diagnostics: d, Expression: []string{"patient"},
		})
	}
	if err := probs.Resolve(req); err != nil {
		return err
	}
	return nil
}

// TypeFilterChecker is a Source that knows which _typeFilter search
// parameters it honours, so the unsupported ones are refused at kick-off.
type TypeFilterChecker interface {
	// CheckTypeFilter returns query ("param=value&…" of resource type typ)
	// without the parameters the source cannot honour, and one error per
	// dropped parameter naming it.
	CheckTypeFilter(typ, query string) (kept string, problems []error)
}

// filterChecker is a Source that knows which search parameters its
// upstream supports for each type.
type filterChecker interface {
	// UnsupportedParams lists the parameters of query ("a=1&b=2") that
	// the upstream does not support for typ.
	UnsupportedParams(ctx context.Context, typ, query string) ([]string, error)
}

// checkTypeFilters refuses a _typeFilter with a search parameter the
// source cannot honour: one this server cannot evaluate (TypeFilterChecker)
// or one the upstream FHIR server does not support (filterChecker; a server
// that ignores a parameter it does not know would return more than the
// filter asks for). Lenient handling never widens the export: it drops the
// whole filter, never a parameter of it (that would select more), and a
// type left without any of its filters is not exported at all (never
// unfiltered).
func (s *Service) checkTypeFilters(ctx context.Context, req *bulkdata.Request, probs *bulkdata.Problems) error {
	tc, local := s.source.(TypeFilterChecker)
	fc, upstream := s.source.(filterChecker)
	if (!local && !upstream) || len(req.TypeFilters) == 0 {
		return nil
	}
	var kept []string
	emptied := map[string]bool{}
	for _, f := range req.TypeFilters {
		typ, query, _ := strings.Cut(f, "?")
		var reasons []string
		if local {
			_, problems := tc.CheckTypeFilter(typ, query)
			for _, p := range problems {
				reasons = append(reasons, p.Error())
			}
		}
		if upstream {
			bad, err := fc.UnsupportedParams(ctx, typ, query)
			if err != nil {
				return s.unavailable(ctx, "read the upstream's search parameters", err)
			}
			if len(bad) > 0 {
				reasons = append(reasons, fmt.Sprintf("the upstream FHIR server does not support the search parameter %s for %s", strings.Join(bad, ", "), typ))
			}
		}
		if len(reasons) == 0 {
			kept = append(kept, f)
			continue
		}
		for _, r := range reasons {
			probs.Narrow(fhir.CodeNotSupported, "_typeFilter", fmt.Sprintf("%s: %s, so this filter cannot be applied; %s resources matched only by it are not exported", f, r, typ))
		}
		emptied[typ] = true
	}
	for _, f := range kept {
		typ, _, _ := strings.Cut(f, "?")
		delete(emptied, typ)
	}
	req.TypeFilters = kept
	if len(emptied) == 0 {
		return nil
	}
	types := req.Types
	if len(types) == 0 {
		// What an export without _type reads (exportTypes).
		list := s.source.Types
		if d, ok := s.source.(defaultTyper); ok {
			list = d.DefaultTypes
		}
		all, err := list(ctx)
		if err != nil {
			return s.unavailable(ctx, "list the source's types", err)
		}
		types = all
	}
	req.Types = slices.DeleteFunc(slices.Clone(types), func(t string) bool { return emptied[t] })
	if len(req.Types) == 0 {
		// Nothing is left to export; an empty list would mean everything.
		probs.Add(fhir.CodeNotSupported, "_typeFilter", "no type is left to export")
		req.Lenient = false
	}
	return nil
}

// probe asks a ProbingSource about its upstream (a 503 when it does not
// answer); other sources give a zero Probe.
func (s *Service) probe(ctx context.Context) (Probe, error) {
	ps, ok := s.source.(ProbingSource)
	if !ok {
		return Probe{}, nil
	}
	p, err := ps.Probe(ctx)
	if err != nil {
		return Probe{}, s.unavailable(ctx, "probe the source", err)
	}
	return p, nil
}

// relevantProvenanceCustom is the server-defined includeAssociatedData code
// bulkfhir treats as RelevantProvenanceResources.
const relevantProvenanceCustom = "_relevantProvenance"

// readySource is a Source that can tell quickly whether it answers (an
// upstream server), so a kick-off fails at once instead of in Plan.
type readySource interface {
	Ready(ctx context.Context) error
}

// unavailable reports a source failure at kick-off as a transient 503.
func (s *Service) unavailable(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		// The client disconnected during an upstream call: not a
		// failure of the source.
		s.log.InfoContext(ctx, "client disconnected during a source call", "op", what)
	} else {
		s.log.ErrorContext(ctx, "source unavailable", "op", what, "err", err)
	}
	e := bulkdata.NewError(http.StatusServiceUnavailable, fhir.CodeTransient, "the data source is unavailable right now; try again later")
	e.RetryAfter = 10 * time.Second
	return e
}

// StatusReport is what a status request returns.
type StatusReport struct {
	Job *Job
	// Manifest is set when the job completed.
	Manifest *bulkdata.Manifest
	// RetryAfter is the polling interval to suggest while the job runs.
	RetryAfter time.Duration
	// Progress is the X-Progress text while the job runs.
	Progress string
	// Next is the cursor of the next manifest page of a paged manifest
	// ("" when there is none, or none yet).
	Next string
	// files are the completed job's file records the unpaged Manifest was
	// built from, sorted (ManifestLinkedBy links them again without a
	// second read of the store).
	files []File
}

// Status returns a job the owner may see. Other owners' jobs, cancelled and
// expired jobs are ErrJobNotFound.
func (s *Service) Status(ctx context.Context, owner, id string) (*StatusReport, error) {
	return s.StatusPage(ctx, owner, id, "")
}

// StatusPage is Status for one page of a paged manifest: the page after
// cursor ("" for the first). A job that allows partial manifests gets its
// manifest in pages, also while it runs (Manifest set on a live job when a
// page is ready); a cursor for another job is ErrBadPage.
func (s *Service) StatusPage(ctx context.Context, owner, id, cursor string) (*StatusReport, error) {
	job, err := s.visibleJob(ctx, owner, id)
	if err != nil {
		return nil, err
	}
	paged := job.Request.AllowPartialManifests
	if cursor != "" && (!paged || !ValidPageCursor(cursor)) {
		return nil, ErrBadPage
	}
	rep := &StatusReport{Job: job}
	switch job.Status {
	case StatusCompleted:
		if paged {
			p, err := s.page(ctx, job, cursor, nil)
			if err != nil {
				return nil, err
			}
			rep.Manifest, rep.Next = p.Manifest, p.Next
			break
		}
		files, err := s.sortedFiles(ctx, job)
		if err != nil {
			return nil, err
		}
		m, err := s.manifest(ctx, job, files, s.files)
		if err != nil {
			return nil, err
		}
		rep.Manifest, rep.files = m, files
	case StatusAccepted, StatusInProgress:
		var progress map[string]UnitProgress
		if job.Plan != nil {
			if progress, err = s.jobs.Progress(ctx, job.ID); err != nil {
				return nil, fmt.Errorf("status: read progress of %s: %w", job.ID, err)
			}
		}
		if paged && job.Status == StatusInProgress {
			p, err := s.page(ctx, job, cursor, progress)
			if err != nil {
				return nil, err
			}
			if p != nil {
				rep.Manifest, rep.Next = p.Manifest, p.Next
			}
		}
		rep.Progress = job.ProgressText(progress)
		if s.queue != nil && job.Status == StatusAccepted {
			rep.Progress = s.queuedProgress(ctx, job)
		}
		age := s.now().Sub(job.CreatedAt)
		rep.RetryAfter = time.Second + age/15
		if rep.RetryAfter > 10*time.Second {
			rep.RetryAfter = 10 * time.Second
		}
	}
	return rep, nil
}

func (s *Service) visibleJob(ctx context.Context, owner, id string) (*Job, error) {
	if !ValidJobID(id) || !ValidOwner(owner) {
		return nil, ErrJobNotFound // never reaches the store
	}
	job, err := s.jobs.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if job.Owner != owner || job.Status == StatusCancelled {
		return nil, ErrJobNotFound
	}
	if !job.Status.Live() && s.now().After(job.ExpiresAt) {
		return nil, ErrJobNotFound
	}
	return job, nil
}

// ManifestLinkedBy is the complete, unpaged manifest of report's job (a
// completed export that did not ask for partial manifests, as StatusPage
// returned it) with the links links makes instead of the file store's:
// the API's own download route (api.RedirectLinks) when the signed links
// make a response too large for the platform. The caller sets
// RequiresAccessToken to what its links need.
func (s *Service) ManifestLinkedBy(ctx context.Context, report *StatusReport, links Linker) (*bulkdata.Manifest, error) {
	job := report.Job
	if job == nil || job.Status != StatusCompleted || job.Request.AllowPartialManifests || report.Manifest == nil {
		return nil, errors.New("manifest: only a completed, unpaged export has one whole manifest")
	}
	return s.manifest(ctx, job, report.files, links)
}

// sortedFiles are the job's file records in manifest order.
func (s *Service) sortedFiles(ctx context.Context, job *Job) ([]File, error) {
	files, err := s.jobs.Files(ctx, job.ID)
	if err != nil {
		return nil, fmt.Errorf("manifest: list files of %s: %w", job.ID, err)
	}
	sort.Slice(files, func(i, j int) bool {
		a, b := files[i], files[j]
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if a.Unit != b.Unit {
			return a.Unit < b.Unit
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.Key < b.Key
	})
	return files, nil
}

// manifest builds the completion manifest of files with fresh links that
// expire with the job.
func (s *Service) manifest(ctx context.Context, job *Job, files []File, links Linker) (*bulkdata.Manifest, error) {
	m := s.newManifest(job)
	for _, f := range files {
		if err := s.addEntry(ctx, links, job, m, f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Cancel cancels a job the owner may see, stops its work and deletes its
// files. Afterwards the job is ErrJobNotFound for every request.
func (s *Service) Cancel(ctx context.Context, owner, id string) error {
	job, err := s.visibleJob(ctx, owner, id)
	if err != nil {
		return err
	}
	t := Transition{
		From: []Status{StatusAccepted, StatusInProgress, StatusCompleted, StatusFailed},
		To:   StatusCancelled,
	}
	_, err = s.jobs.Transition(ctx, job.ID, t)
	if err != nil && !IsConflict(err) {
		// The store could not record it: on a full disk, removing the
		// files is what frees space, so remove them first and try again.
		s.log.WarnContext(ctx, "cancel: record failed; deleting files first", "job", job.ID, "err", err)
		if derr := s.files.DeleteJob(ctx, job.ID); derr == nil {
			_, err = s.jobs.Transition(ctx, job.ID, t)
		}
	}
	if IsConflict(err) {
		return ErrJobNotFound // cancelled by a concurrent request
	}
	if err != nil {
		s.log.ErrorContext(ctx, "cancel", "job", job.ID, "err", err)
		e := bulkdata.NewError(http.StatusServiceUnavailable, fhir.CodeTransient, "the export could not be cancelled right now; try again")
		e.RetryAfter = 5 * time.Second
		return e
	}
	if err := s.runner.Stop(ctx, job.ID); err != nil {
		s.log.WarnContext(ctx, "stop job", "job", job.ID, "err", err)
	}
	if s.queue != nil {
		// The cancelled job's running place (if it had one) is free at
		// once: start the next queued job now, not at the next sweep.
		if err := s.queue.Remove(ctx, job); err != nil {
			s.log.WarnContext(ctx, "cancel: remove from the queue", "job", job.ID, "err", err)
		}
		if _, err := s.Dispatch(ctx); err != nil {
			s.log.WarnContext(ctx, "dispatch after cancel", "job", job.ID, "err", err)
		}
	}
	if err := s.files.DeleteJob(ctx, job.ID); err != nil {
		s.log.WarnContext(ctx, "delete files of cancelled job", "job", job.ID, "err", err)
	}
	s.log.InfoContext(ctx, "cancelled", "job", job.ID)
	s.observe(ctx, job, EventCancelled)
	return nil
}
