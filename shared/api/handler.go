// Package api is bulkfhir's HTTP surface: one net/http handler serving the
// Bulk Data kick-off endpoints, the status URL (GET and DELETE), the
// CapabilityStatement, Group read and search, and (embedded mode) signed
// file downloads. Every error is a FHIR OperationOutcome with
// Content-Type application/fhir+json; no request can crash the server.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// StatusPath is the path under the FHIR base where job status lives.
const StatusPath = "/bulkstatus/"

// PageParam is the status URL's query parameter naming a manifest page
// (allowPartialManifests): the cursor a next link carries.
const PageParam = "page"

// FileServer serves signed download links (the embedded file store).
type FileServer interface {
	ServeFile(w http.ResponseWriter, r *http.Request, key string, q url.Values)
}

// GroupReader is implemented by sources that can read and search Groups
// (checklist GR-01).
type GroupReader interface {
	ReadResource(ctx context.Context, t, id string) ([]byte, error)
	SearchGroups(ctx context.Context, identifier, name string) ([][]byte, error)
}

// Config configures the handler.
type Config struct {
	// BasePath is where the FHIR API is mounted ("/fhir").
	BasePath string
	// BaseURL is the public FHIR base URL; empty means derive it from each
	// request's Host (and X-Forwarded-Proto).
	BaseURL string
	// Auth authenticates clients; nil means Anonymous.
	Auth Authenticator
	// AuthServer, when set, serves the token endpoint and the SMART
	// discovery document under the base (smartauth.Server).
	AuthServer http.Handler
	// TokenURL is the token endpoint the CapabilityStatement advertises
	// when authentication is on: an absolute URL, or a path under the base
	// (smartauth.TokenPath); empty advertises none.
	TokenURL string
	// Files serves download links; nil when links point elsewhere (S3).
	Files FileServer
	// Deliver, when set, answers downloads in redirect mode (downloads.go)
	// instead of Files: the manifest links to the API, every download is
	// authorized by the owner's token.
	Deliver FileDeliverer
	// Fits, when set, reports whether a response body fits the
	// platform's response limit for request r (apigw: a Lambda response is
	// at most 6 MB, as encoded). A complete manifest that does not fit is
	// sent with links to the download route when Deliver serves it
	// (fitManifest), else refused with an OperationOutcome.
	Fits func(r *http.Request, body []byte) bool
	// Version is reported in the CapabilityStatement.
	Version string
	// RequestID, when set, returns an id that stays the same when the
	// platform retries a request (API Gateway's request id); kick-off uses
	// it to make retries idempotent.
	RequestID func(r *http.Request) string
	// StatusWait is the longest a status request that sends Prefer:
	// wait=N is held until its export changes (wait.go); 0 answers at
	// once (AWS: a held request would be Lambda time).
	StatusWait time.Duration
	Log        *slog.Logger
}

// Handler is the bulkfhir HTTP API.
type Handler struct {
	svc     *export.Service
	cfg     Config
	groups  GroupReader
	started time.Time
	log     *slog.Logger
	types   typeCache
}

// New returns the handler for svc.
func New(svc *export.Service, cfg Config) *Handler {
	if cfg.BasePath == "" {
		cfg.BasePath = "/fhir"
	}
	cfg.BasePath = "/" + strings.Trim(cfg.BasePath, "/")
	cfg.BaseURL = strings.TrimSuffix(cfg.BaseURL, "/")
	if cfg.Auth == nil {
		cfg.Auth = Anonymous{}
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	h := &Handler{svc: svc, cfg: cfg, started: time.Now().UTC(), log: cfg.Log, types: typeCache{now: time.Now}}
	h.groups, _ = svc.Source().(GroupReader)
	return h
}

// statusRecorder captures the status code for the access log. With
// plainJSON (the client's Accept asks for application/json, not
// application/fhir+json) it labels FHIR JSON bodies (OperationOutcomes,
// the CapabilityStatement) application/json, so such a client can read the
// status, cancel and error responses.
type statusRecorder struct {
	http.ResponseWriter
	status    int
	plainJSON bool
	// bytes of body written and the audit record (audit.go).
	bytes int64
	audit audit
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
		if h := s.Header(); s.plainJSON && h.Get("Content-Type") == "application/fhir+json" {
			h.Set("Content-Type", "application/json")
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, plainJSON: bulkdata.PrefersPlainJSON(r.Header.Values("Accept"))}
	rec.audit.event = auditEvent(r.Method, r.URL.Path)
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			h.log.Error("panic serving request", "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rec.status == 0 {
				writeOutcome(rec, http.StatusInternalServerError, fhir.CodeException, "internal server error")
			}
		}
		h.logRequest(rec, r, start)
	}()
	h.route(rec, r)
}

func (h *Handler) route(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, h.cfg.BasePath)
	if !ok || (path != "" && path[0] != '/') {
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "not found: the FHIR API is under "+h.cfg.BasePath)
		return
	}
	path = strings.TrimSuffix(path, "/")
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	switch {
	case path == "/metadata":
		h.metadata(w, r)
	case h.cfg.AuthServer != nil && (path == smartauth.DiscoveryPath || path == smartauth.TokenPath):
		h.cfg.AuthServer.ServeHTTP(w, r)
	case path == "/$export":
		h.kickoff(w, r, bulkdata.LevelSystem, "")
	case path == "/Patient/$export":
		h.kickoff(w, r, bulkdata.LevelPatient, "")
	case len(parts) == 3 && parts[0] == "Group" && parts[2] == "$export":
		if !fhir.IsID(parts[1]) {
			badGroupID(w, parts[1])
			return
		}
		h.kickoff(w, r, bulkdata.LevelGroup, parts[1])
	case strings.HasPrefix(path+"/", StatusPath) && len(parts) == 2:
		h.status(w, r, parts[1])
	case strings.HasPrefix(path, LinkPrefix) && h.cfg.Deliver != nil:
		h.deliver(w, r, strings.TrimPrefix(path, LinkPrefix))
	case strings.HasPrefix(path, LinkPrefix) && h.cfg.Files != nil:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET, HEAD")
			return
		}
		q, qerr := bulkdata.QueryValues(r.URL.RawQuery)
		if qerr != nil {
			writeError(w, qerr)
			return
		}
		key := strings.TrimPrefix(path, LinkPrefix)
		if a := auditOf(w); fileKeyRE.MatchString(key) {
			a.job, _, _ = strings.Cut(key, "/")
			a.file = key
		}
		if h.authorizeFile(w, r, key) {
			h.cfg.Files.ServeFile(w, r, key, q)
		}
	case path == "/Group" && h.groups != nil:
		h.searchGroups(w, r)
	case len(parts) == 2 && parts[0] == "Group" && h.groups != nil:
		if !fhir.IsID(parts[1]) {
			badGroupID(w, parts[1])
			return
		}
		h.readGroup(w, r, parts[1])
	default:
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotSupported, "not found: "+r.URL.Path+" is not an endpoint of this server")
	}
}

func badGroupID(w http.ResponseWriter, id string) {
	writeOutcome(w, http.StatusBadRequest, fhir.CodeValue,
		fmt.Sprintf("Group/%q: not a FHIR id (1-64 of A-Z, a-z, 0-9, '-', '.')", clipText(id)))
}

// clipText shortens untrusted text quoted in a diagnostic.
func clipText(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// LinkPrefix is the path (under the base) of embedded file downloads; the
// embedded file store builds its links with it.
const LinkPrefix = "/bulkfiles/"

// baseURL is the public FHIR base URL for this request.
func (h *Handler) baseURL(r *http.Request) string {
	if h.cfg.BaseURL != "" {
		return h.cfg.BaseURL
	}
	return smartauth.RequestBase(r, h.cfg.BasePath)
}

func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request) (Caller, bool) {
	caller, err := h.cfg.Auth.Authenticate(r)
	if err == nil && !export.ValidOwner(caller.Client) {
		err = errors.New("the credentials name a client id this server cannot use (1-256 printable characters)")
	}
	if err != nil {
		challenge := `Bearer realm="bulkfhir"`
		if !errors.Is(err, errNoToken) {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeOutcome(w, http.StatusUnauthorized, fhir.CodeLogin, err.Error())
		return Caller{}, false
	}
	return caller, true
}

func (h *Handler) kickoff(w http.ResponseWriter, r *http.Request, level bulkdata.Level, groupID string) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed(w, "GET, POST")
		return
	}
	caller, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	owner := caller.Client
	auditOf(w).client = owner
	prefs, perr := bulkdata.CheckKickoffHeaders(r.Header)
	if perr != nil {
		writeError(w, perr)
		return
	}
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, bulkdata.MaxBodyBytes))
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeOutcome(w, http.StatusRequestEntityTooLarge, fhir.CodeTooCostly, fmt.Sprintf("body: larger than %d bytes", bulkdata.MaxBodyBytes))
			return
		}
		if err != nil {
			writeOutcome(w, http.StatusBadRequest, fhir.CodeStructure, "body: could not be read")
			return
		}
	}
	req, perr := bulkdata.Parse(bulkdata.Kickoff{
		Method: r.Method, Level: level, GroupID: groupID, RawQuery: r.URL.RawQuery,
		ContentType: r.Header.Get("Content-Type"), Body: body, Prefer: prefs, Now: time.Now(),
	})
	if perr == nil {
		perr = authorizeTypes(caller, req)
	}
	if perr != nil {
		writeError(w, perr)
		return
	}
	base := h.baseURL(r)
	requestURL := base + strings.TrimPrefix(r.URL.EscapedPath(), h.cfg.BasePath)
	if r.Method == http.MethodGet && r.URL.RawQuery != "" {
		requestURL += "?" + r.URL.RawQuery
	}
	key := ""
	if h.cfg.RequestID != nil {
		key = h.cfg.RequestID(r)
	}
	job, err := h.svc.Kickoff(r.Context(), owner, req, requestURL, key)
	if err != nil {
		h.serviceError(w, r, "kick-off", err)
		return
	}
	auditOf(w).job = job.ID
	w.Header().Set("Content-Location", base+StatusPath+job.ID)
	if req.SeparateExportStatus {
		w.Header().Set("Preference-Applied", "respond-async, separate-export-status")
	}
	// The parameters dropped under lenient handling are in the body too, so
	// a client can report (or refuse) them before it downloads anything;
	// they also stay in the manifest's error files.
	issues := append([]fhir.Issue{{Severity: fhir.SeverityInformation, Code: fhir.CodeInformational,
		Diagnostics: "export accepted; poll the Content-Location URL for its status"}}, req.Ignored...)
	writeJSON(w, http.StatusAccepted, "application/fhir+json", fhir.NewOutcome(issues...).JSON())
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodGet && r.Method != http.MethodDelete {
		methodNotAllowed(w, "GET, DELETE")
		return
	}
	caller, ok := h.authenticate(w, r)
	if !ok {
		return
	}
	owner := caller.Client
	if a := auditOf(w); export.ValidJobID(id) {
		a.job = id
	}
	auditOf(w).client = owner
	ctx := export.WithBaseURL(r.Context(), h.baseURL(r))
	if r.Method == http.MethodDelete {
		if err := h.svc.Cancel(ctx, owner, id); err != nil {
			h.serviceError(w, r, "cancel", err)
			return
		}
		writeJSON(w, http.StatusAccepted, "application/fhir+json",
			fhir.Outcome(fhir.SeverityInformation, fhir.CodeInformational, "export cancelled; its files are deleted").JSON())
		return
	}
	cursor := r.URL.Query().Get(PageParam)
	if n := h.holdStatus(ctx, r, owner, id, cursor); n > 0 {
		w.Header().Set("Preference-Applied", preferenceAppliedWait(n))
	}
	rep, err := h.svc.StatusPage(ctx, owner, id, cursor)
	if errors.Is(err, export.ErrBadPage) {
		writeOutcome(w, http.StatusBadRequest, fhir.CodeValue, PageParam+": not a manifest page of this export (pages exist only for exports kicked off with allowPartialManifests=true)")
		return
	}
	if err != nil {
		h.serviceError(w, r, "status", err)
		return
	}
	if rep.Manifest != nil && rep.Next != "" {
		next := h.baseURL(r) + StatusPath + id + "?" + PageParam + "=" + url.QueryEscape(rep.Next)
		rep.Manifest.Link = []bulkdata.ManifestLink{{Relation: "next", URL: next}}
	}
	job := rep.Job
	if !coversJob(caller, job) {
		writeOutcome(w, http.StatusForbidden, fhir.CodeForbidden, "the access token's scopes do not cover every type of this export")
		return
	}
	separate := job.Request.SeparateExportStatus
	hd := w.Header()
	switch job.Status {
	case export.StatusAccepted, export.StatusInProgress:
		hd.Set("X-Progress", rep.Progress)
		hd.Set("Retry-After", strconv.Itoa(int(rep.RetryAfter/time.Second)))
		if rep.Manifest != nil {
			// A partial manifest (N-04): the files done so far.
			body, err := marshalManifest(rep.Manifest)
			if err != nil {
				h.internalError(w, r, "manifest", err)
				return
			}
			status := http.StatusAccepted
			if separate {
				hd.Set("X-Export-Status", "202 Accepted")
				status = http.StatusOK
			}
			writeJSON(w, status, "application/json", body)
			return
		}
		if separate {
			hd.Set("X-Export-Status", "202 Accepted")
			writeJSON(w, http.StatusOK, "application/fhir+json",
				fhir.Outcome(fhir.SeverityInformation, fhir.CodeInformational, rep.Progress).JSON())
			return
		}
		w.WriteHeader(http.StatusAccepted)
	case export.StatusCompleted:
		body, err := marshalManifest(rep.Manifest)
		if err != nil {
			h.internalError(w, r, "manifest", err)
			return
		}
		if h.cfg.Fits != nil && !job.Request.AllowPartialManifests && !h.cfg.Fits(r, body) {
			if body, ok = h.fitManifest(ctx, w, r, rep, len(body)); !ok {
				return
			}
		}
		hd.Set("Expires", job.ExpiresAt.UTC().Format(http.TimeFormat))
		if separate {
			hd.Set("X-Export-Status", "200 OK")
		}
		writeJSON(w, http.StatusOK, "application/json", body)
	case export.StatusFailed:
		status := job.FailStatus
		if status < 400 {
			status = http.StatusInternalServerError
		}
		outcome := fhir.Outcome(fhir.SeverityError, fhir.CodeException, "the export failed")
		if job.Outcome != nil {
			outcome = *job.Outcome
		}
		if separate {
			hd.Set("X-Export-Status", fmt.Sprintf("%d %s", status, http.StatusText(status)))
			status = http.StatusOK
		}
		writeJSON(w, status, "application/fhir+json", outcome.JSON())
	default:
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "no such export")
	}
}

// fitManifest answers for a complete, unpaged manifest whose signed links
// make it too large for one response (Config.Fits): the same manifest
// with links to the API's download route (requiresAccessToken true; each
// download is authorized by the owner's token, then redirected to a
// short-lived signed link) when this handler serves that route; else, or
// if even that is too large, a 406 OperationOutcome that says to ask for
// partial manifests. ok is false when it has answered.
func (h *Handler) fitManifest(ctx context.Context, w http.ResponseWriter, r *http.Request, rep *export.StatusReport, signed int) (body []byte, ok bool) {
	job, m := rep.Job, rep.Manifest
	files := len(m.Output) + len(m.Error) + len(m.Deleted)
	if h.cfg.Deliver != nil {
		short, err := h.svc.ManifestLinkedBy(ctx, rep, routeLinks{})
		if err != nil {
			h.internalError(w, r, "manifest", err)
			return nil, false
		}
		short.RequiresAccessToken = true
		if body, err = marshalManifest(short); err != nil {
			h.internalError(w, r, "manifest", err)
			return nil, false
		}
		if h.cfg.Fits(r, body) {
			h.log.InfoContext(ctx, "manifest too large with signed links: links to the download route",
				"job", job.ID, "files", files, "signed_bytes", signed, "bytes", len(body))
			return body, true
		}
	}
	h.log.WarnContext(ctx, "manifest too large for one response", "job", job.ID, "files", files, "signed_bytes", signed)
	writeOutcome(w, http.StatusNotAcceptable, fhir.CodeTooCostly, fmt.Sprintf(
		"the manifest of this export lists %d files, more than one response of this server can carry; "+
			"kick off the export again with allowPartialManifests=true to receive the manifest in pages", files))
	return nil, false
}

func (h *Handler) readGroup(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	if c, ok := h.authenticate(w, r); !ok || !c.Allows("Group") {
		if ok {
			writeOutcome(w, http.StatusForbidden, fhir.CodeForbidden, "the access token's scopes do not cover Group")
		}
		return
	}
	raw, err := h.groups.ReadResource(r.Context(), "Group", id)
	if errors.Is(err, export.ErrGroupNotFound) || errors.Is(err, os.ErrNotExist) {
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "Group/"+id+": no such Group")
		return
	}
	if err != nil {
		h.internalError(w, r, "read group", err)
		return
	}
	writeJSON(w, http.StatusOK, "application/fhir+json", raw)
}

func (h *Handler) searchGroups(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	if c, ok := h.authenticate(w, r); !ok || !c.Allows("Group") {
		if ok {
			writeOutcome(w, http.StatusForbidden, fhir.CodeForbidden, "the access token's scopes do not cover Group")
		}
		return
	}
	q, qerr := bulkdata.QueryValues(r.URL.RawQuery)
	if qerr != nil {
		writeError(w, qerr)
		return
	}
	for name, vs := range q {
		switch name {
		case "identifier", "name", "_format", "_pretty":
			if len(vs) > 1 {
				writeOutcome(w, http.StatusBadRequest, fhir.CodeInvalid, name+": may be given only once")
				return
			}
		default:
			writeOutcome(w, http.StatusBadRequest, fhir.CodeNotSupported, clipText(name)+": not a supported Group search parameter (use identifier or name)")
			return
		}
	}
	found, err := h.groups.SearchGroups(r.Context(), q.Get("identifier"), q.Get("name"))
	if err != nil {
		h.internalError(w, r, "search groups", err)
		return
	}
	writeJSON(w, http.StatusOK, "application/fhir+json", searchsetBundle(h.baseURL(r), "Group", found))
}

// serviceError maps a Service error to a response.
func (h *Handler) serviceError(w http.ResponseWriter, r *http.Request, op string, err error) {
	var be *bulkdata.Error
	switch {
	case errors.As(err, &be):
		writeError(w, be)
	case errors.Is(err, export.ErrJobNotFound):
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "no such export: it never existed, was cancelled, belongs to another client, or has expired")
	default:
		h.internalError(w, r, op, err)
	}
}

func (h *Handler) internalError(w http.ResponseWriter, r *http.Request, op string, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away during an upstream call: nothing failed
		// here, and nobody reads the answer.
		h.log.InfoContext(r.Context(), "client disconnected", "op", op)
		return
	}
	h.log.ErrorContext(r.Context(), "internal error", "op", op, "err", err)
	w.Header().Set("Retry-After", "5")
	writeOutcome(w, http.StatusInternalServerError, fhir.CodeTransient, "internal error during "+op+"; try again")
}
