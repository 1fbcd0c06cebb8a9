// Package bulkclient is a FHIR Bulk Data Access client: kick-off (GET or
// POST), polling that honours Retry-After, parallel downloads of every
// output, error and deleted file into a Sink (a folder, or an object store
// prefix through package s3sink), and a summary. It works against any Bulk
// Data v2 server. Transient failures (429, 5xx, network errors) are retried
// with bounded exponential backoff; the bearer token goes only where the
// manifest says downloads need it. Every request leaves through Client.do.
//
// A run never exports more than asked and never mixes exports: the sink
// records the request, a sink holding another export is refused, a resumed
// run must ask the same, and a _typeFilter the server dropped stops a strict
// run. A cancelled context ends a run with *Interrupted (complete files
// kept, partial ones removed), after a DELETE when CancelOnAbort is set.
package bulkclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/retry"
)

// Options describe one export.
type Options struct {
	Server                string // FHIR base URL
	Level                 string // system, patient or group; "" infers it from Group and Patients
	Group                 string
	Types                 []string
	Since, Until          string
	Elements              []string
	TypeFilters           []string
	Patients              []string
	IncludeAssociatedData []string
	Post                  bool
	Lenient               bool
	// PartialManifests sends allowPartialManifests=true: the client follows
	// the manifest's next links and downloads files as they appear.
	PartialManifests bool
	// OrganizeOutputBy sends organizeOutputBy (STU3; "Patient"): output
	// files of blocks, one per patient, instead of one type per file.
	OrganizeOutputBy string
	// StrictFilters stops the run (and cancels the export) when the server
	// says it dropped a _typeFilter: an unfiltered export is wider than
	// asked. The CLI turns it on whenever TypeFilters are given.
	StrictFilters bool
	Token         string
	// Tokens, when set, logs in (SMART Backend Services) instead of Token.
	Tokens TokenSource
	// OutDir is the local output folder, used when Sink is nil.
	OutDir string
	Sink   Sink
	// Parallel downloads at once.
	Parallel int
	// Resume continues the export that last wrote into the sink, keeping
	// complete files; the request must be the same.
	Resume bool
	// Force replaces an earlier export in the sink.
	Force bool
	// StatusURL polls an export started elsewhere instead of kicking off.
	StatusURL     string
	CancelOnAbort bool
	// Attachments downloads DocumentReference content.attachment.url files.
	Attachments bool
	// MaxRetries bounds retries of one request; MaxWait caps one wait.
	MaxRetries int
	MaxWait    time.Duration
}

// Client runs exports.
type Client struct {
	opts Options
	sink Sink
	http *http.Client
	rep  Reporter
	// reached is set once any HTTP response arrived: before that a refused
	// connection means a wrong URL or a server that is down, not a blip.
	reached atomic.Bool
	// pages merges a paged manifest (allowPartialManifests).
	pages pages
	// refresh re-reads expired download links (refresh.go).
	refresh linkRefresher
}

// UsageError is an option combination that cannot be run as asked.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usage(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// New returns a client. httpClient may be nil; rep may be nil (silent).
// Contradictory options are a *UsageError.
func New(opts Options, httpClient *http.Client, rep Reporter) (*Client, error) {
	if opts.Server == "" && opts.StatusURL == "" {
		return nil, usage("--server is required")
	}
	for _, s := range []struct{ name, v string }{{"--server", opts.Server}, {"--status", opts.StatusURL}} {
		if s.v == "" {
			continue
		}
		u, err := url.Parse(s.v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, usage("%s %q is not an http(s) URL", s.name, s.v)
		}
	}
	opts.Server = strings.TrimSuffix(opts.Server, "/")
	// --group means a Group export and --patient a Patient-level one: a
	// level that says otherwise is a mistake, not something to ignore.
	switch opts.Level {
	case "":
		switch {
		case opts.Group != "":
			opts.Level = "group"
		case len(opts.Patients) > 0:
			opts.Level = "patient"
		default:
			opts.Level = "system"
		}
	case "system", "patient", "group":
	default:
		return nil, usage("--level %q: want system, patient or group", opts.Level)
	}
	switch {
	case opts.Level == "group" && opts.Group == "":
		return nil, usage("--level group needs --group ID")
	case opts.Level != "group" && opts.Group != "":
		return nil, usage("--group %s contradicts --level %s (a Group export is --level group, or leave --level out)", opts.Group, opts.Level)
	case opts.Level == "system" && len(opts.Patients) > 0:
		return nil, usage("--patient contradicts --level system: patient is a Patient or Group level parameter")
	case opts.Resume && opts.Force:
		return nil, usage("--resume and --force contradict each other: --resume keeps the export in the folder, --force replaces it")
	case opts.StatusURL != "" && opts.Resume:
		return nil, usage("--status and --resume contradict each other: --resume continues the export recorded in the folder")
	}
	if opts.StatusURL != "" && requestOf(opts).hasParams() {
		return nil, usage("--status polls an export started elsewhere: its request cannot be changed with kick-off flags (--type, --since, --group, …)")
	}
	if len(opts.Patients) > 0 {
		opts.Post = true // patient is a POST-only parameter
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 4
	}
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 6
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = 60 * time.Second
	}
	if opts.OutDir == "" {
		opts.OutDir = "out"
	}
	sink := opts.Sink
	if sink == nil {
		sink = DirSink{Dir: opts.OutDir}
	}
	if httpClient == nil {
		httpClient = &http.Client{Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 32, DisableCompression: true,
			ResponseHeaderTimeout: 2 * time.Minute,
		}}
	}
	if rep == nil {
		rep = nopReporter{}
	}
	return &Client{opts: opts, sink: sink, http: httpClient, rep: rep}, nil
}

// Error is a failure the CLI prints as one line.
type Error struct{ Msg string }

func (e *Error) Error() string { return e.Msg }

func fail(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Sentinels for the output folder checks; the CLI reports them as usage
// errors.
var (
	ErrOutputInUse     = errors.New("the output holds another export")
	ErrResumeMismatch  = errors.New("--resume with a different request")
	ErrNothingToResume = errors.New("nothing to resume")
	ErrFilterDropped   = errors.New("the server dropped a _typeFilter")
)

// Interrupted is returned when the context was cancelled (Ctrl-C): it says
// what was kept and what is left, and whether the export still runs on the
// server.
type Interrupted struct {
	Stage      string // kick-off, polling or downloading
	StatusURL  string
	Location   string   // where the complete files are
	Done       int      // files complete (downloaded or kept)
	Left       []string // files not downloaded
	Running    bool     // the export still runs on the server
	Cancelled  bool     // a DELETE was accepted
	CancelNote string   // what the DELETE got, when it was sent
}

func (e *Interrupted) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "interrupted during %s", e.Stage)
	if e.Stage == "downloading" {
		fmt.Fprintf(&b, ": %d files complete in %s, %d left", e.Done, e.Location, len(e.Left))
		if len(e.Left) > 0 {
			names := e.Left
			if len(names) > 5 {
				names = names[:5]
			}
			fmt.Fprintf(&b, " (%s", strings.Join(names, ", "))
			if len(e.Left) > 5 {
				fmt.Fprintf(&b, ", and %d more", len(e.Left)-5)
			}
			b.WriteString(")")
		}
	}
	switch {
	case e.StatusURL == "":
		b.WriteString("; the kick-off did not complete, no export is known to have started")
	case e.Cancelled:
		fmt.Fprintf(&b, "; the export was cancelled on the server (%s)", e.CancelNote)
	case e.Running:
		fmt.Fprintf(&b, "; the export is still running on the server: %s", e.StatusURL)
	default:
		fmt.Fprintf(&b, "; the export is complete on the server, its files stay until they expire: %s", e.StatusURL)
	}
	if e.CancelNote != "" && !e.Cancelled {
		fmt.Fprintf(&b, " (cancel failed: %s)", e.CancelNote)
	}
	if e.StatusURL != "" && !e.Cancelled {
		b.WriteString("; run again with --resume to continue")
	}
	return b.String()
}

// stateFile records which export wrote into the sink, with its request, so
// --resume continues that export (and keeps its complete files) and a
// different export is refused.
const stateFile = ".bulkfhir-export.json"

// Record is what stateFile holds.
type Record struct {
	StatusURL string  `json:"statusUrl"`
	Server    string  `json:"server"`
	Request   Request `json:"request"`
	Complete  bool    `json:"complete,omitempty"`
}

// Request is what identifies an export's content: two runs with the same
// request write the same files.
type Request struct {
	Level                 string   `json:"level"`
	Group                 string   `json:"group,omitempty"`
	Types                 []string `json:"type,omitempty"`
	Since                 string   `json:"since,omitempty"`
	Until                 string   `json:"until,omitempty"`
	Elements              []string `json:"elements,omitempty"`
	TypeFilters           []string `json:"typeFilter,omitempty"`
	Patients              []string `json:"patient,omitempty"`
	IncludeAssociatedData []string `json:"includeAssociatedData,omitempty"`
	OrganizeOutputBy      string   `json:"organizeOutputBy,omitempty"`
	// StatusURL is set for an export polled with --status, whose request
	// the client does not know.
	StatusURL string `json:"statusUrl,omitempty"`
}

func requestOf(o Options) Request {
	// Order does not change what is exported: --type A,B resumes --type B,A.
	sorted := func(l []string) []string {
		if len(l) == 0 {
			return nil
		}
		return slices.Sorted(slices.Values(l))
	}
	r := Request{Level: o.Level, Group: o.Group, Types: sorted(o.Types), Since: o.Since, Until: o.Until, Elements: sorted(o.Elements),
		TypeFilters: sorted(o.TypeFilters), Patients: sorted(o.Patients), IncludeAssociatedData: sorted(o.IncludeAssociatedData), OrganizeOutputBy: o.OrganizeOutputBy, StatusURL: o.StatusURL}
	if r.Level == "" {
		r.Level = "system"
	}
	return r
}

func (r Request) hasParams() bool {
	return r.Group != "" || len(r.Types) > 0 || r.Since != "" || r.Until != "" || len(r.Elements) > 0 ||
		len(r.TypeFilters) > 0 || len(r.Patients) > 0 || len(r.IncludeAssociatedData) > 0 || r.OrganizeOutputBy != "" || (r.Level != "system" && r.Level != "")
}

func (r Request) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// ReadRecord reads the record of the export in a sink (for verify): its
// status URL, server and request. A sink without one is fs.ErrNotExist.
func ReadRecord(ctx context.Context, s Sink) (*Record, error) {
	b, err := readFile(ctx, s, stateFile)
	if err != nil {
		return nil, err
	}
	var st Record
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	return &st, nil
}

// StateFile is the name of the file that records the export in a folder.
const StateFile = stateFile

// prepare checks the sink against the request and returns the status URL to
// continue ("" to kick off).
func (c *Client) prepare(ctx context.Context) (string, error) {
	want := requestOf(c.opts)
	names, err := c.sink.List(ctx)
	if err != nil {
		return "", fail("output %s: %v", c.sink.Location(), err)
	}
	var st *Record
	if b, err := readFile(ctx, c.sink, stateFile); err == nil {
		st = &Record{}
		if json.Unmarshal(b, st) != nil {
			st = nil
		}
	}
	if c.opts.Resume {
		if st == nil || st.StatusURL == "" {
			return "", fmt.Errorf("%w: %s holds no export started by bulkfhir export", ErrNothingToResume, c.sink.Location())
		}
		if st.Server != c.opts.Server || st.Request.String() != want.String() {
			return "", fmt.Errorf("%w: %s holds the export of %s with %s; these flags ask %s for %s",
				ErrResumeMismatch, c.sink.Location(), st.Server, st.Request, c.opts.Server, want)
		}
		c.rep.Logf("resuming export %s", st.StatusURL)
		return st.StatusURL, nil
	}
	if len(names) > 0 {
		if !c.opts.Force {
			what := fmt.Sprintf("%d files", len(names))
			if st != nil {
				what = fmt.Sprintf("the export of %s with %s", st.Server, st.Request)
			}
			return "", fmt.Errorf("%w: %s is not empty (it holds %s); use another folder, --resume to continue that export, or --force to replace it",
				ErrOutputInUse, c.sink.Location(), what)
		}
		// --force: remove what an export writes, nothing else.
		for _, n := range names {
			if exportFile(n) {
				if err := c.sink.Remove(ctx, n); err != nil {
					return "", fail("--force: remove %s: %v", n, err)
				}
			}
		}
	}
	return c.opts.StatusURL, nil
}

// exportFile reports a name that an export writes into its sink.
func exportFile(name string) bool {
	switch {
	case name == stateFile, name == "manifest.json":
		return true
	case strings.HasPrefix(name, "error/"), strings.HasPrefix(name, "deleted/"), strings.HasPrefix(name, "attachments/"):
		return true
	}
	return !strings.Contains(name, "/") && (strings.HasSuffix(name, ".ndjson") || strings.HasSuffix(name, ".ndjson.part"))
}

func (c *Client) writeState(ctx context.Context, statusURL string, complete bool) error {
	b, _ := json.Marshal(Record{StatusURL: statusURL, Server: c.opts.Server, Request: requestOf(c.opts), Complete: complete})
	if err := writeFile(ctx, c.sink, stateFile, b); err != nil {
		return fail("write %s: %v", stateFile, err)
	}
	return nil
}

// Run kicks off (or, with Resume or StatusURL, continues) an export, waits
// for it and downloads its files. A cancelled ctx ends it with an
// *Interrupted, after the DELETE when CancelOnAbort is set.
func (c *Client) Run(ctx context.Context) (sum *Summary, err error) {
	defer func() { c.rep.Finish(err) }()
	start := time.Now()
	statusURL, err := c.prepare(ctx)
	if err != nil {
		return nil, err
	}
	if statusURL == "" {
		var warnings []Issue
		statusURL, warnings, err = c.kickoff(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, &Interrupted{Stage: "kick-off", Location: c.sink.Location()}
			}
			return nil, err
		}
		if err := c.writeState(ctx, statusURL, false); err != nil {
			return nil, err
		}
		for _, w := range warnings {
			c.rep.Logf("the server dropped a parameter: %s", w.Diagnostics)
		}
		if err := c.checkFilters(warnings); err != nil {
			return nil, c.refuse(statusURL, err)
		}
	} else if c.opts.StatusURL != "" {
		if err := c.writeState(ctx, statusURL, false); err != nil {
			return nil, err
		}
	}
	raw, m, err := c.poll(ctx, statusURL)
	if err != nil {
		if ctx.Err() != nil {
			return nil, c.interrupted("polling", statusURL, nil, nil)
		}
		return nil, err
	}
	if err := writeFile(ctx, c.sink, "manifest.json", raw); err != nil {
		if ctx.Err() != nil {
			return nil, c.interrupted("downloading", statusURL, plan(m), nil)
		}
		return nil, fail("write manifest.json: %v", err)
	}
	c.refresh.statusURL = statusURL
	sum, err = c.downloadAll(ctx, m)
	if err != nil {
		if ctx.Err() != nil {
			return nil, c.interrupted("downloading", statusURL, plan(m), sum)
		}
		if errors.Is(err, ErrFilterDropped) {
			return nil, c.refuse(statusURL, err)
		}
		return nil, err
	}
	sum.Wall = time.Since(start)
	sum.StatusURL = statusURL
	sum.TransactionTime = m.TransactionTime
	sum.Location = c.sink.Location()
	if err := c.writeState(context.WithoutCancel(ctx), statusURL, true); err != nil {
		return nil, err
	}
	return sum, nil
}

// checkFilters stops a run whose _typeFilter the server dropped when the
// filters are strict.
func (c *Client) checkFilters(issues []Issue) error {
	if !c.opts.StrictFilters || len(c.opts.TypeFilters) == 0 {
		return nil
	}
	for _, is := range issues {
		if droppedFilter(is) {
			return fmt.Errorf("%w (%s); the export would be wider than asked, so no data is downloaded (--strict-filters=false accepts it)",
				ErrFilterDropped, is.Diagnostics)
		}
	}
	return nil
}

func droppedFilter(is Issue) bool {
	if is.Severity == "information" {
		return false
	}
	if slices.Contains(is.Expression, "_typeFilter") {
		return true
	}
	return strings.Contains(is.Diagnostics, "_typeFilter")
}

// refuse cancels an export the client will not download and says so.
func (c *Client) refuse(statusURL string, cause error) error {
	ok, note := c.cancelExport(statusURL)
	if ok {
		return fmt.Errorf("%w; the export was cancelled on the server (%s)", cause, note)
	}
	return fmt.Errorf("%w; cancelling the export failed (%s): %s", cause, note, statusURL)
}

// interrupted builds the report of an interrupted run and, when asked,
// cancels the export on the server.
func (c *Client) interrupted(stage, statusURL string, jobs []job, sum *Summary) error {
	e := &Interrupted{Stage: stage, StatusURL: statusURL, Location: c.sink.Location(), Running: stage == "polling"}
	done := map[string]bool{}
	if sum != nil {
		e.Done = sum.Files
		for _, f := range sum.FileList {
			done[f.Name] = true
		}
	}
	for _, j := range jobs {
		if !done[j.name] {
			e.Left = append(e.Left, j.name)
		}
	}
	if c.opts.CancelOnAbort {
		e.Cancelled, e.CancelNote = c.cancelExport(statusURL)
	}
	return e
}

// cancelExport sends DELETE to the status URL, with a short budget of its
// own: the run's context is already cancelled.
func (c *Client) cancelExport(statusURL string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, statusURL, nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := c.do(req, true)
	if err != nil {
		return false, unwrapURLError(err).Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return false, describe(resp)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return true, "DELETE " + resp.Status
}

// Cancel sends DELETE to a status URL (bulkfhir cancel).
func (c *Client) Cancel(ctx context.Context, statusURL string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, statusURL, nil)
	if err != nil {
		return "", usage("status URL %q: %v", statusURL, err)
	}
	req.Header.Set("Accept", "application/fhir+json")
	resp, err := c.do(req, true)
	if err != nil {
		return "", fail("DELETE %s: %v", statusURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return "", fail("DELETE %s: %s", statusURL, describe(resp))
	}
	return resp.Status, nil
}

// do is the one place requests leave the client: it adds the credentials
// (withToken is false for downloads whose manifest says they need none, and
// for other origins) and sends the request.
func (c *Client) do(req *http.Request, withToken bool) (*http.Response, error) {
	switch {
	case withToken && c.opts.Tokens != nil:
		tok, err := c.opts.Tokens.Token(req.Context())
		if err != nil {
			c.rep.Logf("login: %v", err) // the server answers 401, which the caller reports
			break
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case withToken && c.opts.Token != "":
		req.Header.Set("Authorization", "Bearer "+c.opts.Token)
	}
	// Status and other API responses may come compressed (a large manifest
	// behind API Gateway does): ask for gzip and read it as the standard
	// transport would, which DisableCompression turned off for downloads,
	// which set their own Accept-Encoding and keep the stored bytes.
	ownEncoding := req.Header.Get("Accept-Encoding") != ""
	if !ownEncoding {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	resp, err := c.http.Do(req)
	if err == nil {
		c.reached.Store(true)
		if !ownEncoding && strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
			if err := gunzipBody(resp); err != nil {
				resp.Body.Close()
				return nil, err
			}
		}
	}
	return resp, err
}

// gunzipBody replaces a gzip-encoded response body by its plain bytes.
func gunzipBody(resp *http.Response) error {
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		return fmt.Errorf("%s: gzip body: %w", resp.Request.URL.Redacted(), err)
	}
	resp.Body = gzipBody{zr, resp.Body}
	resp.Header.Del("Content-Encoding")
	resp.Header.Del("Content-Length")
	resp.ContentLength, resp.Uncompressed = -1, true
	return nil
}

type gzipBody struct {
	*gzip.Reader
	raw io.Closer
}

func (b gzipBody) Close() error { return b.raw.Close() }

// kickoffURL is the $export endpoint for the level.
func (c *Client) kickoffURL() string {
	switch c.opts.Level {
	case "patient":
		return c.opts.Server + "/Patient/$export"
	case "group":
		return c.opts.Server + "/Group/" + url.PathEscape(c.opts.Group) + "/$export"
	}
	return c.opts.Server + "/$export"
}

type kv struct{ name, value string }

func (c *Client) params() []kv {
	var p []kv
	add := func(name string, values []string, join bool) {
		if len(values) == 0 {
			return
		}
		if join {
			p = append(p, kv{name, strings.Join(values, ",")})
			return
		}
		for _, v := range values {
			p = append(p, kv{name, v})
		}
	}
	add("_type", c.opts.Types, true)
	if c.opts.Since != "" {
		p = append(p, kv{"_since", c.opts.Since})
	}
	if c.opts.Until != "" {
		p = append(p, kv{"_until", c.opts.Until})
	}
	add("_elements", c.opts.Elements, true)
	add("_typeFilter", c.opts.TypeFilters, false)
	add("includeAssociatedData", c.opts.IncludeAssociatedData, true)
	if c.opts.PartialManifests {
		p = append(p, kv{"allowPartialManifests", "true"})
	}
	if c.opts.OrganizeOutputBy != "" {
		p = append(p, kv{"organizeOutputBy", c.opts.OrganizeOutputBy})
	}
	return p
}

// kickoff starts the export and returns its status URL and the warnings of
// the 202 reply's OperationOutcome (parameters dropped under lenient
// handling, for one).
func (c *Client) kickoff(ctx context.Context) (string, []Issue, error) {
	target := c.kickoffURL()
	var body []byte
	method := http.MethodGet
	if c.opts.Post {
		method = http.MethodPost
		type param struct {
			Name           string            `json:"name"`
			ValueString    string            `json:"valueString,omitempty"`
			ValueInstant   string            `json:"valueInstant,omitempty"`
			ValueBoolean   *bool             `json:"valueBoolean,omitempty"`
			ValueReference map[string]string `json:"valueReference,omitempty"`
		}
		var ps []param
		for _, p := range c.params() {
			switch p.name {
			case "_since", "_until":
				ps = append(ps, param{Name: p.name, ValueInstant: p.value})
			case "allowPartialManifests": // a boolean in the OperationDefinition
				b := p.value == "true"
				ps = append(ps, param{Name: p.name, ValueBoolean: &b})
			default:
				ps = append(ps, param{Name: p.name, ValueString: p.value})
			}
		}
		for _, id := range c.opts.Patients {
			ref := id
			if !strings.Contains(ref, "/") {
				ref = "Patient/" + id
			}
			ps = append(ps, param{Name: "patient", ValueReference: map[string]string{"reference": ref}})
		}
		body, _ = json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": ps})
	} else if ps := c.params(); len(ps) > 0 {
		q := url.Values{}
		for _, p := range ps {
			q.Add(p.name, p.value)
		}
		target += "?" + q.Encode()
	}
	resp, err := c.send(ctx, func() (*http.Request, error) {
		var rd io.Reader
		if body != nil {
			rd = strings.NewReader(string(body))
		}
		req, err := http.NewRequestWithContext(ctx, method, target, rd)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/fhir+json")
		prefer := "respond-async"
		if c.opts.Lenient {
			prefer += ", handling=lenient"
		}
		req.Header.Set("Prefer", prefer)
		if body != nil {
			req.Header.Set("Content-Type", "application/fhir+json")
		}
		return req, nil
	}, true)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return "", nil, fail("kick-off %s %s: %s", method, target, describe(resp))
	}
	loc := resp.Header.Get("Content-Location")
	if loc == "" {
		return "", nil, fail("kick-off: the server answered 202 without a Content-Location header")
	}
	abs, err := resp.Request.URL.Parse(loc)
	if err != nil {
		return "", nil, fail("kick-off: bad Content-Location %q", loc)
	}
	c.rep.Logf("export started: %s", abs)
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var warnings []Issue
	for _, is := range outcomeIssues(b) {
		if is.Severity == "warning" || is.Severity == "error" {
			warnings = append(warnings, is)
		}
	}
	return abs.String(), warnings, nil
}

// Issue is one OperationOutcome issue.
type Issue = fhir.Issue

// outcomeIssues reads the issues of an OperationOutcome (none for anything
// else).
func outcomeIssues(b []byte) []Issue {
	var oo struct {
		ResourceType string  `json:"resourceType"`
		Issue        []Issue `json:"issue"`
	}
	if json.Unmarshal(b, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return nil
	}
	return oo.Issue
}

// poll waits for the export to finish and returns the manifest.
func (c *Client) poll(ctx context.Context, statusURL string) ([]byte, *Manifest, error) {
	return c.pollPages(ctx, statusURL, true)
}

// pollPages is poll; early says whether the files of partial manifests are
// downloaded while the export runs (not when polling for fresh links).
func (c *Client) pollPages(ctx context.Context, statusURL string, early bool) ([]byte, *Manifest, error) {
	misses, renewed := 0, false
	// The kick-off reply carries no Retry-After; a first look soon after it
	// finishes small exports without a full polling interval.
	if err := sleep(ctx, 200*time.Millisecond); err != nil {
		return nil, nil, err
	}
	// Each poll lets the server hold it for the interval the client would
	// wait anyway (Prefer: wait, RFC 7240): a server that does (bulkfhir
	// serve) answers when the export completes or lists new files, not a
	// whole-second Retry-After later; one that does not ignores it.
	interval := time.Second
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, statusURL, nil)
		if err != nil {
			return nil, nil, fail("status URL %q: %v", statusURL, err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Prefer", "wait="+strconv.Itoa(max(1, int(interval/time.Second))))
		sent := time.Now()
		resp, err := c.do(req, true)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if misses++; misses > c.opts.MaxRetries {
				return nil, nil, fail("status %s: server unreachable: %v", statusURL, err)
			}
			if err := sleep(ctx, backoff(misses, c.opts.MaxWait)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if c.renewAfter401(resp, req, &renewed) {
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK && resp.Header.Get("X-Export-Status") != "" && !strings.HasPrefix(resp.Header.Get("X-Export-Status"), "200"):
			// separate-export-status: the job state is in the header.
			st := resp.Header.Get("X-Export-Status")
			resp.Body.Close()
			if !strings.HasPrefix(st, "202") {
				return nil, nil, fail("export failed: %s", st)
			}
			c.rep.Polling(resp.Header.Get("X-Progress"))
			if err := sleep(ctx, pollWait(resp.Header, sent, c.opts.MaxWait, &interval)); err != nil {
				return nil, nil, err
			}
		case resp.StatusCode == http.StatusOK:
			raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
			resp.Body.Close()
			if err != nil {
				return nil, nil, fail("read manifest: %v", err)
			}
			m, err := parseManifest(raw)
			if err != nil {
				return nil, nil, err
			}
			if m.Next() == "" && c.pages.merged == nil {
				return raw, m, nil // one page: kept as the server wrote it
			}
			c.pages.merge(m)
			if next := m.Next(); next != "" {
				statusURL, misses = next, 0
				continue
			}
			return c.pages.manifest()
		case resp.StatusCode == http.StatusAccepted:
			misses = 0
			c.rep.Polling(resp.Header.Get("X-Progress"))
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
			resp.Body.Close()
			grew := false
			if c.opts.PartialManifests && len(bytes.TrimSpace(raw)) > 0 {
				// A partial manifest: the files done so far (N-04).
				m, err := parseManifest(raw)
				if err != nil {
					return nil, nil, err
				}
				before := c.pages.files()
				c.pages.merge(m)
				grew = c.pages.files() > before
				// Polling for fresh links (early false), the running
				// download loop fetches the files itself.
				if early {
					if err := c.downloadEarly(ctx, &c.pages); err != nil {
						return nil, nil, err
					}
				}
				if next := m.Next(); next != "" {
					statusURL = next // the page this one links to, at once
					continue
				}
				// Poll this last page until it links on or completes.
			}
			wait := pollWait(resp.Header, sent, c.opts.MaxWait, &interval)
			if grew && heldAsked(resp.Header) {
				// The server that holds polls answered because files
				// were listed: the next poll is held again at once.
				wait = 0
			}
			if err := sleep(ctx, wait); err != nil {
				return nil, nil, err
			}
		case retry.RetryableStatus(resp.StatusCode):
			msg := describe(resp)
			resp.Body.Close()
			if misses++; misses > c.opts.MaxRetries {
				return nil, nil, fail("status %s: %s (gave up after %d retries)", statusURL, msg, c.opts.MaxRetries)
			}
			c.rep.Logf("status: %s; retrying", msg)
			if err := sleep(ctx, retryAfter(resp.Header, misses, c.opts.MaxWait)); err != nil {
				return nil, nil, err
			}
		default:
			msg := describe(resp)
			resp.Body.Close()
			return nil, nil, fail("export failed: %s", msg)
		}
	}
}

// pollWait is the wait before the next poll after a 202: the Retry-After
// interval (which becomes the next poll's Prefer: wait), less the time the
// server held this request when it says it did (Preference-Applied: wait),
// since that time was the interval.
func pollWait(h http.Header, sent time.Time, limit time.Duration, interval *time.Duration) time.Duration {
	d := retryAfter(h, 0, limit)
	*interval = d
	if heldAsked(h) {
		d = max(d-time.Since(sent), 0)
	}
	return d
}

// heldAsked reports a response that says the server applied the wait
// preference.
func heldAsked(h http.Header) bool {
	for _, line := range h.Values("Preference-Applied") {
		for _, p := range strings.Split(line, ",") {
			name, _, _ := strings.Cut(strings.TrimSpace(p), "=")
			if strings.EqualFold(strings.TrimSpace(name), "wait") {
				return true
			}
		}
	}
	return false
}

// send performs a request with retries on the retryable statuses
// (retry.RetryableStatus) and network errors. newReq is called per attempt.
func (c *Client) send(ctx context.Context, newReq func() (*http.Request, error), withToken bool) (*http.Response, error) {
	renewed := false
	for attempt := 1; ; attempt++ {
		req, err := newReq()
		if err != nil {
			return nil, fail("%v", err)
		}
		resp, err := c.do(req, withToken)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if !c.reached.Load() && unreachable(err) {
				return nil, fail("%s %s: server unreachable: %v", req.Method, req.URL.Redacted(), unwrapURLError(err))
			}
			if attempt > c.opts.MaxRetries {
				return nil, fail("%s %s: %v", req.Method, req.URL.Redacted(), unwrapURLError(err))
			}
			if err := sleep(ctx, backoff(attempt, c.opts.MaxWait)); err != nil {
				return nil, err
			}
			continue
		}
		if c.renewAfter401(resp, req, &renewed) {
			continue
		}
		if retry.RetryableStatus(resp.StatusCode) && attempt <= c.opts.MaxRetries {
			wait := retryAfter(resp.Header, attempt, c.opts.MaxWait)
			c.rep.Logf("%s %s: %s; retrying in %s", req.Method, req.URL.Path, resp.Status, wait)
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err := sleep(ctx, wait); err != nil {
				return nil, err
			}
			continue
		}
		return resp, nil
	}
}

// unreachable reports a connection that could not be made at all.
func unreachable(err error) bool {
	var dns *net.DNSError
	return errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dns)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// retryAfter is the wait before the next request after an answer with
// header h: what the server asks for (Retry-After, rate-limit resets) as
// given, else the backoff for the attempt, at most max (retry.Wait, the
// rule the REST source follows too).
func retryAfter(h http.Header, attempt int, max time.Duration) time.Duration {
	return retry.Wait(h, time.Now(), backoff(attempt, max), max)
}

// backoff is 1 s before the next poll of a running export (attempt 0), and
// before retry attempt n (from 1) the retry policy's full jitter in
// [0, 1 s·2^(n-1)], capped at max.
func backoff(attempt int, max time.Duration) time.Duration {
	if attempt < 1 {
		return min(time.Second, max)
	}
	return retry.Policy{Interval: time.Second, BackoffRate: 2, MaxDelay: max, Jitter: true}.Delay(attempt - 1)
}

func sleep(ctx context.Context, d time.Duration) error { return retry.Sleep(ctx, d) }

// describe renders an error response in one line: the status and, for an
// OperationOutcome, its diagnostics; otherwise a snippet of the body.
func describe(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string `json:"severity"`
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
		} `json:"issue"`
	}
	if json.Unmarshal(b, &oo) == nil && oo.ResourceType == "OperationOutcome" && len(oo.Issue) > 0 {
		var parts []string
		for _, is := range oo.Issue {
			parts = append(parts, strings.TrimSpace(is.Diagnostics+" ("+is.Code+")"))
		}
		return resp.Status + ": " + strings.Join(parts, "; ")
	}
	snippet := strings.Join(strings.Fields(string(b)), " ")
	if len(snippet) > 120 {
		snippet = snippet[:120] + "…"
	}
	if snippet == "" {
		return resp.Status
	}
	return resp.Status + " (not a FHIR OperationOutcome): " + snippet
}

// StatusReport is one look at an export's status URL (bulkfhir status).
type StatusReport struct {
	State      string        `json:"status"` // in-progress, complete, failed
	Progress   string        `json:"progress,omitempty"`
	RetryAfter time.Duration `json:"-"`
	HTTPStatus int           `json:"httpStatus"`
	Manifest   *Manifest     `json:"manifest,omitempty"`
	Error      string        `json:"error,omitempty"`
}

// Status asks a status URL once.
func (c *Client) Status(ctx context.Context, statusURL string) (*StatusReport, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, statusURL, nil)
	if err != nil {
		return nil, usage("status URL %q: %v", statusURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req, true)
	if err != nil {
		return nil, fail("GET %s: %v", statusURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	rep := &StatusReport{HTTPStatus: resp.StatusCode, Progress: resp.Header.Get("X-Progress"), RetryAfter: retryAfter(resp.Header, 0, time.Hour)}
	xs := resp.Header.Get("X-Export-Status")
	switch {
	case resp.StatusCode == http.StatusAccepted, resp.StatusCode == http.StatusOK && strings.HasPrefix(xs, "202"):
		rep.State = "in-progress"
	case resp.StatusCode == http.StatusOK && (xs == "" || strings.HasPrefix(xs, "200")):
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
		if err != nil {
			return nil, fail("read manifest: %v", err)
		}
		m, err := parseManifest(raw)
		if err != nil {
			return nil, err
		}
		if m.Next() != "" {
			if m, err = c.allPages(ctx, m); err != nil {
				return nil, err
			}
		}
		rep.State, rep.Manifest = "complete", m
	default:
		rep.State, rep.Error = "failed", describe(resp)
		if xs != "" {
			rep.Error = xs
		}
	}
	return rep, nil
}
