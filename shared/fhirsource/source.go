// Package fhirsource is the Source over an upstream FHIR R4 server's REST
// API: type-level searches paged by next links (absolute or relative),
// _since and the job's upper bound mapped to _lastUpdated=gt…/le…, each
// _typeFilter query run as its own search and the results merged without
// duplicates, the Patient compartment searched through its parameters in
// batches of patient ids, Group membership read from the Group.
//
// Each entry's resource is copied as compact raw JSON, never decoded. A
// cursor is the search, the page URL and the entries consumed on it, so a
// chunk stopped by its time budget resumes exactly.
//
// Plan splits a large type into _lastUpdated ranges when the upstream
// sorts by _lastUpdated (probed), so the ranges export in parallel. Within
// one unit a reader keeps several pages in flight (readahead): a large
// segment is read in _lastUpdated sub-windows side by side, each chain's
// next page requested as soon as the previous body has arrived, the later
// searches of the unit read ahead, under a cap on requests and a byte
// budget.
package fhirsource

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/typefilter"
)

// Options configure a Source. Zero values take the defaults.
type Options struct {
	// BaseURL is the upstream FHIR service base (required).
	BaseURL string
	// HTTPClient sends the requests (default: one with a 60 s response
	// header timeout).
	HTTPClient *http.Client
	// Auth adds credentials to each request (nil: none).
	Auth Authorizer
	// PageSize is the _count of each search (default 500).
	PageSize int
	// PatientBatch caps how many patient ids one compartment search names
	// (default: as many as MaxIDBytes allows); a batch is also the unit of
	// fan-out of Patient and Group exports.
	PatientBatch int
	// SegmentResources is the size above which a type is split into
	// _lastUpdated ranges (default 100,000; negative: never split).
	SegmentResources int64
	// MaxSegments bounds the ranges of one type (default 64).
	MaxSegments int
	// MaxRetries is how often a request is retried (default 10); Backoff
	// the first retry's upper bound (default 500 ms), MaxBackoff the cap on
	// one backoff wait (default 60 s), MaxWait the cap on one wait the
	// upstream asks for with Retry-After or rate-limit headers (default 2
	// minutes), RetryBudget the time one request may spend retrying
	// (default 5 minutes; a step's deadline bounds it too).
	MaxRetries                                int
	Backoff, MaxBackoff, MaxWait, RetryBudget time.Duration
	// FollowCrossOrigin follows next links to another origin than
	// BaseURL's, without credentials (default: such a link ends its search
	// with an error, so the upstream's credentials never leave it).
	FollowCrossOrigin bool
	// MaxIDBytes bounds the patient ids one compartment search names, in
	// URL-encoded bytes (default 6,000, which keeps URLs under the 8 KB
	// most servers accept).
	MaxIDBytes int
	// CacheFor is how long the CapabilityStatement and Group memberships
	// are reused (default 1 minute).
	CacheFor time.Duration
	// MaxInFlight caps the requests one reader (one unit's chunk) has
	// in flight at once (default 4; 1 reads one page at a time).
	MaxInFlight int
	// ReadAheadBytes bounds the page bodies one reader holds in memory
	// beyond the page it reads (default 32 MiB); a page bigger than what
	// is left is streamed.
	ReadAheadBytes int64
	// KeysetWindows is how many _lastUpdated sub-windows a segment paged
	// by keyset is read in, each its own chain of pages in flight
	// (default 4; 1: none).
	KeysetWindows int
	Log           *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = 60 * time.Second
		t.MaxIdleConnsPerHost = 16
		o.HTTPClient = &http.Client{Transport: t}
	}
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	if o.PatientBatch <= 0 {
		o.PatientBatch = 1000
	}
	if o.MaxIDBytes <= 0 {
		o.MaxIDBytes = 6000
	}
	if o.SegmentResources == 0 {
		o.SegmentResources = 100_000
	}
	if o.MaxSegments <= 0 {
		o.MaxSegments = 64
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 10
	}
	if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.Backoff <= 0 {
		o.Backoff = 500 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 60 * time.Second
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 2 * time.Minute
	}
	if o.RetryBudget <= 0 {
		o.RetryBudget = 5 * time.Minute
	}
	if o.CacheFor <= 0 {
		o.CacheFor = time.Minute
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 4
	}
	if o.ReadAheadBytes <= 0 {
		o.ReadAheadBytes = 32 << 20
	}
	if o.KeysetWindows <= 0 {
		o.KeysetWindows = 4
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return o
}

// Source reads from an upstream FHIR server.
type Source struct {
	opts   Options
	client *client

	mu      sync.Mutex
	types   []string
	history map[string]bool // types whose history the upstream serves
	// params are the search parameters the CapabilityStatement lists per
	// type ("" for those of every type); refused the types listed as
	// searchable whose search answered with a permanent error.
	params map[string]map[string]bool
	// defaults is DefaultTypes' answer, from defaultsAt.
	defaults   []string
	defaultsAt time.Time
	typesAt    time.Time
	groups     map[string]cachedGroup
	elements   map[string]bool // per type: does the upstream honour _elements?
	// counts are the _summary=count answers of Plan's compartment searches,
	// by type and bounds: Plan asks once per stored patient batch, and the
	// answer for one job's bounds (its upper bound is its transactionTime)
	// is the same for every batch.
	counts map[string]cachedCount
}

type cachedCount struct {
	at time.Time
	n  int64
}

type cachedGroup struct {
	at      time.Time
	members []string
}

var _ export.DeletionSource = (*Source)(nil)

// New returns a Source for the upstream at opts.BaseURL.
func New(opts Options) (*Source, error) {
	opts = opts.withDefaults()
	base, err := url.Parse(opts.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("fhir source: base URL %q is not an http(s) URL", opts.BaseURL)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	base.RawQuery, base.Fragment = "", ""
	return &Source{
		opts: opts,
		client: &client{
			base: base, http: opts.HTTPClient, auth: opts.Auth, maxRetries: opts.MaxRetries,
			backoff: opts.Backoff, maxBackoff: opts.MaxBackoff, maxWait: opts.MaxWait, budget: opts.RetryBudget,
			crossOrigin: opts.FollowCrossOrigin, log: opts.Log, stats: &retryStats{}, hold: &atomic.Int64{}, refused: &gate{},
		},
		groups:   map[string]cachedGroup{},
		elements: map[string]bool{},
	}, nil
}

// Caps implements export.Source: _typeFilter queries are run upstream.
func (s *Source) Caps() export.SourceCaps { return export.SourceCaps{TypeFilter: true} }

// Types implements export.Source: the resource types the upstream's
// CapabilityStatement can search, read afresh at most once per CacheFor.
func (s *Source) Types(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	if s.types != nil && time.Since(s.typesAt) < s.opts.CacheFor {
		t := s.types
		s.mu.Unlock()
		return t, nil
	}
	s.mu.Unlock()
	types, _, err := s.readTypes(ctx, s.client)
	return types, err
}

// readTypes reads the CapabilityStatement through c and caches its types;
// it also returns the response's Date (zero if none).
func (s *Source) readTypes(ctx context.Context, c *client) ([]string, time.Time, error) {
	u, err := c.resolve("metadata")
	if err != nil {
		return nil, time.Time{}, err
	}
	resp, err := c.get(ctx, u)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read upstream CapabilityStatement: %w", err)
	}
	date, _ := http.ParseTime(resp.Header.Get("Date"))
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	resp.Body.Close()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("read upstream CapabilityStatement: %w", err)
	}
	if gjson.GetBytes(body, "resourceType").Str != "CapabilityStatement" {
		return nil, time.Time{}, fmt.Errorf("upstream metadata is not a CapabilityStatement")
	}
	set, history := map[string]bool{}, map[string]bool{}
	params := map[string]map[string]bool{"": {}}
	addParams := func(t string, list gjson.Result) {
		if params[t] == nil {
			params[t] = map[string]bool{}
		}
		list.ForEach(func(_, p gjson.Result) bool {
			if n := p.Get("name").Str; n != "" {
				params[t][n] = true
			}
			return true
		})
	}
	gjson.GetBytes(body, "rest").ForEach(func(_, rest gjson.Result) bool {
		if m := rest.Get("mode").Str; m != "" && m != "server" {
			return true
		}
		addParams("", rest.Get("searchParam"))
		rest.Get("resource").ForEach(func(_, res gjson.Result) bool {
			t := res.Get("type").Str
			if !fhir.IsResourceType(t) {
				return true
			}
			addParams(t, res.Get("searchParam"))
			ia := res.Get("interaction")
			ok := !ia.Exists()
			ia.ForEach(func(_, i gjson.Result) bool {
				switch i.Get("code").Str {
				case "search-type":
					ok = true
				case "history-type":
					history[t] = true
				}
				return true
			})
			if ok {
				set[t] = true
			}
			return true
		})
		return true
	})
	types := make([]string, 0, len(set))
	for t := range set {
		types = append(types, t)
	}
	sort.Strings(types)
	s.mu.Lock()
	s.types, s.history, s.params, s.typesAt = types, history, params, time.Now()
	s.mu.Unlock()
	return types, date, nil
}

// administrative lists the conformance and terminology types (FHIR R4's
// Conformance and Terminology modules): the upstream's own definitions,
// often thousands, which an export leaves out unless _type names them.
var administrative = map[string]bool{
	"CapabilityStatement": true, "StructureDefinition": true, "ImplementationGuide": true,
	"SearchParameter": true, "MessageDefinition": true, "OperationDefinition": true,
	"CompartmentDefinition": true, "StructureMap": true, "GraphDefinition": true,
	"ExampleScenario": true, "CodeSystem": true, "ValueSet": true, "ConceptMap": true,
	"NamingSystem": true, "TerminologyCapabilities": true,
}

// DefaultTypes lists the types an export without _type reads: the
// upstream's searchable types less the conformance and terminology types,
// those it counts as empty, and those whose search it refuses (Medplum
// lists Binary as searchable but answers 400). One _summary=count per type,
// eight at a time, reused for CacheFor.
func (s *Source) DefaultTypes(ctx context.Context) ([]string, error) {
	types, err := s.Types(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.defaults != nil && time.Since(s.defaultsAt) < s.opts.CacheFor {
		d := s.defaults
		s.mu.Unlock()
		return d, nil
	}
	s.mu.Unlock()
	keep := make([]bool, len(types))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	var firstErr error
	var errMu sync.Mutex
	for i, t := range types {
		if administrative[t] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ok, err := s.searchable(ctx, t)
			if err != nil {
				errMu.Lock()
				firstErr = cmp.Or(firstErr, err)
				errMu.Unlock()
			}
			keep[i] = ok
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	var out []string
	for i, t := range types {
		if keep[i] {
			out = append(out, t)
		}
	}
	s.mu.Lock()
	s.defaults, s.defaultsAt = out, time.Now()
	s.mu.Unlock()
	return out, nil
}

// searchable reports whether typ has resources and the upstream searches
// it: a count of zero is empty; a permanent refusal of the count and of a
// plain search is a type the upstream does not search. A count the
// upstream does not give keeps the type.
func (s *Source) searchable(ctx context.Context, typ string) (bool, error) {
	n, err := s.count(ctx, typ, nil)
	switch {
	case err == nil:
		return n > 0, nil
	case errors.Is(err, errNoTotal):
		return true, nil
	case !Permanent(err):
		return false, err
	}
	if _, err := s.read(ctx, typ+"?_count=1"); err != nil {
		if Permanent(err) {
			s.opts.Log.InfoContext(ctx, "the upstream refuses to search a type it lists; left out unless _type names it", "type", typ, "err", err)
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// UnsupportedParams lists the parameters of a _typeFilter query that the
// upstream's CapabilityStatement does not list for typ (nor for every
// type), and those bulkfhir cannot evaluate itself (package typefilter):
// every resource a filter's search returns is checked here too, so a
// filter that cannot be checked is not run. Modifiers and chains are read
// as their parameter; _id and _lastUpdated, which every search here relies
// on, are taken as listed.
func (s *Source) UnsupportedParams(ctx context.Context, typ, query string) ([]string, error) {
	if _, err := s.Types(ctx); err != nil {
		return nil, err
	}
	v, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("bad _typeFilter query %q: %w", query, err)
	}
	_, problems := typefilter.Check(typ, query)
	local := map[string]bool{}
	for _, p := range problems {
		local[p.Param] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(v)) {
		base, _, _ := strings.Cut(name, ":")
		base, _, _ = strings.Cut(base, ".")
		listed := base == "_id" || base == "_lastUpdated" || s.params[typ][base] || s.params[""][base]
		if listed && !local[name] {
			continue
		}
		bad = append(bad, name)
	}
	return bad, nil
}

// upstreamState is what Probe records in the job (Job.Upstream).
type upstreamState struct {
	// Sorted: the upstream sorts searches by _lastUpdated, so they are
	// paged by keyset rather than by its next links.
	Sorted bool `json:"sorted"`
	// IDTieBreak: it also sorts by _id (_sort=_lastUpdated,_id), so
	// resources of one instant come in a stable order.
	IDTieBreak bool `json:"idTieBreak,omitempty"`
}

// Probe implements export.ProbingSource: it reads the CapabilityStatement
// afresh (retried once, within 10 seconds), takes the upstream's clock
// from the Date header of a search (or the Bundle's meta.lastUpdated), and
// checks whether a search sorted by _lastUpdated comes back in that order.
func (s *Source) Probe(ctx context.Context) (export.Probe, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	quick := *s.client
	quick.maxRetries = min(quick.maxRetries, 1)
	types, date, err := s.readTypes(ctx, &quick)
	if err != nil {
		return export.Probe{}, fmt.Errorf("upstream not ready: %w", err)
	}
	p := export.Probe{Now: date}
	st := upstreamState{}
	typ := "Patient"
	if !slices.Contains(types, typ) && len(types) > 0 {
		typ = types[0]
	}
	u, err := quick.resolve(typ + "?_sort=_lastUpdated&_count=3")
	if err != nil {
		return export.Probe{}, err
	}
	resp, err := quick.get(ctx, u)
	if err != nil && !Permanent(err) {
		return export.Probe{}, fmt.Errorf("upstream not ready: %w", err)
	}
	if err == nil {
		body, rerr := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		resp.Body.Close()
		if rerr != nil {
			return export.Probe{}, fmt.Errorf("upstream not ready: %w", rerr)
		}
		// A search's Bundle may carry the upstream's time to the
		// millisecond; Date has seconds.
		if t, ok := fhir.ParseLastUpdated(gjson.GetBytes(body, "meta.lastUpdated").Str); ok {
			p.Now = t
		} else if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			p.Now = t
		}
		st.Sorted = gjson.GetBytes(body, "resourceType").Str == "Bundle"
		var prev time.Time
		gjson.GetBytes(body, "entry.#.resource.meta.lastUpdated").ForEach(func(_, v gjson.Result) bool {
			t, ok := fhir.ParseLastUpdated(v.Str)
			if !ok || t.Before(prev) {
				st.Sorted = false
			}
			prev = t
			return st.Sorted
		})
	}
	if st.Sorted {
		if u, err := quick.resolve(typ + "?_sort=_lastUpdated,_id&_count=1"); err == nil {
			if resp, err := quick.get(ctx, u); err == nil {
				resp.Body.Close()
				st.IDTieBreak = true
			}
		}
	}
	b, _ := json.Marshal(st)
	p.State = string(b)
	return p, nil
}

// state reads what Probe recorded (a job kicked off before Probe existed
// has none: sorted is then assumed false, the next links are followed).
func state(q export.Query) upstreamState {
	var st upstreamState
	if q.Upstream != "" {
		_ = json.Unmarshal([]byte(q.Upstream), &st)
	}
	return st
}

// Ready checks the upstream answers, for a kick-off to fail fast with a
// transient error when it does not: the CapabilityStatement is read afresh
// (so the export sees the upstream's current types), retried once, within
// 10 seconds.
func (s *Source) Ready(ctx context.Context) error {
	_, err := s.Probe(ctx)
	return err
}

// read GETs a path below the base and returns the whole (small) body.
func (s *Source) read(ctx context.Context, path string) ([]byte, error) {
	u, err := s.client.resolve(path)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.get(ctx, u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 64<<20))
}

// ReadResource returns the resource t/id as the upstream has it;
// export.ErrGroupNotFound for a missing Group.
func (s *Source) ReadResource(ctx context.Context, t, id string) ([]byte, error) {
	if !validID(id) {
		return nil, notFound(t, id)
	}
	body, err := s.read(ctx, t+"/"+id)
	var se *StatusError
	if errors.As(err, &se) && (se.Status == http.StatusNotFound || se.Status == http.StatusGone) {
		return nil, notFound(t, id)
	}
	if err != nil {
		return nil, err
	}
	return compactJSON(body)
}

func notFound(t, id string) error {
	if t == "Group" {
		return export.ErrGroupNotFound
	}
	return fmt.Errorf("%s/%s: %w", t, id, errNotFound)
}

var (
	errNotFound = errors.New("not found")
	errNoTotal  = errors.New("no total in the count Bundle")
)

// validID is the FHIR id syntax, which also keeps ids out of URL paths'
// special characters.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// SearchGroups returns the upstream's Groups with the identifier and name.
func (s *Source) SearchGroups(ctx context.Context, identifier, name string) ([][]byte, error) {
	q := url.Values{}
	if identifier != "" {
		q.Set("identifier", identifier)
	}
	if name != "" {
		q.Set("name", name)
	}
	q.Set("_count", strconv.Itoa(s.opts.PageSize))
	u, err := s.client.resolve("Group")
	if err != nil {
		return nil, err
	}
	resp, err := s.client.get(ctx, u+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	var out [][]byte
	err = s.eachResource(ctx, resp, "Group", func(line []byte, _ fhir.Head) {
		out = append(out, append([]byte(nil), line...))
	})
	return out, err
}

// GroupMembers implements export.Source: the Patient members of the Group
// not marked inactive, sorted, reused for CacheFor.
func (s *Source) GroupMembers(ctx context.Context, id string) ([]string, error) {
	s.mu.Lock()
	g, ok := s.groups[id]
	s.mu.Unlock()
	if ok && time.Since(g.at) < s.opts.CacheFor {
		return g.members, nil
	}
	raw, err := s.ReadResource(ctx, "Group", id)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, pid := range fhir.ActiveMembers(raw) {
		set[pid] = true
	}
	members := slices.Sorted(maps.Keys(set))
	s.mu.Lock()
	s.groups[id] = cachedGroup{at: time.Now(), members: members}
	s.mu.Unlock()
	return members, nil
}

// MissingPatients implements export.Source with _id searches in batches.
func (s *Source) MissingPatients(ctx context.Context, ids []string) ([]string, error) {
	var missing []string
	for start := 0; start < len(ids); start += dedupeBatch {
		batch := ids[start:min(start+dedupeBatch, len(ids))]
		var valid []string
		for _, id := range batch {
			if validID(id) {
				valid = append(valid, id)
			}
		}
		found := map[string]bool{}
		if len(valid) > 0 {
			var err error
			if found, err = s.matching(ctx, "Patient", valid, nil, nil); err != nil {
				return nil, fmt.Errorf("look up patients upstream: %w", err)
			}
		}
		for _, id := range batch {
			if !found[id] {
				missing = append(missing, id)
			}
		}
	}
	return missing, nil
}

// selectedPatients is the sorted list of patients a Patient or Group query
// covers (nil at system level and for a Patient export of everyone).
func (s *Source) selectedPatients(ctx context.Context, q export.Query) ([]string, error) {
	if q.Level == bulkdata.LevelGroup {
		members, err := s.GroupMembers(ctx, q.GroupID)
		if err != nil {
			return nil, err
		}
		if len(q.Patients) == 0 {
			return members, nil
		}
		in := map[string]bool{}
		for _, m := range members {
			in[m] = true
		}
		set := map[string]bool{}
		for _, p := range q.Patients {
			if in[p] {
				set[p] = true
			}
		}
		return slices.Sorted(maps.Keys(set)), nil
	}
	if q.Level == bulkdata.LevelPatient && len(q.Patients) > 0 {
		set := map[string]bool{}
		for _, p := range q.Patients {
			set[p] = true
		}
		return slices.Sorted(maps.Keys(set)), nil
	}
	return nil, nil
}

// batches splits the sorted patient ids into the batches of compartment
// searches: as many ids as MaxIDBytes of URL-encoded "Patient/<id>," allow,
// at most PatientBatch. The split depends only on the ids, so Plan and
// every chunk agree on it.
func (s *Source) batches(patients []string) [][]string {
	var out [][]string
	start, size := 0, 0
	for i, id := range patients {
		n := len(url.QueryEscape("Patient/"+id)) + 3 // and an encoded comma
		if i > start && (size+n > s.opts.MaxIDBytes || i-start >= s.opts.PatientBatch) {
			out = append(out, patients[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(patients) {
		out = append(out, patients[start:])
	}
	return out
}

// compartmentSearch reports whether q reads the compartments of a list of
// patients (rather than a whole type).
func compartmentSearch(q export.Query) bool {
	return q.Level == bulkdata.LevelGroup || (q.Level == bulkdata.LevelPatient && len(q.Patients) > 0)
}

// PatientBatch implements export.PatientBatcher: Plan gives each unit as
// many patients as one compartment search names.
func (s *Source) PatientBatch() int { return s.opts.PatientBatch }

// Segments are "" (the whole type), "p<i>" (the i-th batch of patients) or
// "t<gt>~<le>" (a _lastUpdated range).

// Plan implements export.Source. A type the upstream counts as empty
// (_summary=count, one request) has no segments, so a Patient or Group
// export runs no compartment searches for it.
func (s *Source) Plan(ctx context.Context, q export.Query, typ string) ([]string, error) {
	if compartmentSearch(q) {
		patients, err := s.selectedPatients(ctx, q)
		if err != nil {
			return nil, err
		}
		if len(patients) == 0 {
			return nil, nil
		}
		if n, err := s.planCount(ctx, typ, timeBounds(q.Since, q.Until)); err == nil && n == 0 {
			return nil, nil
		}
		var segs []string
		for i := range s.batches(patients) {
			segs = append(segs, "p"+strconv.Itoa(i))
		}
		return segs, nil
	}
	if q.Level == bulkdata.LevelSystem && len(q.TypeFilters) > 0 && s.opts.KeysetWindows > 1 {
		// The count tells Open whether to read sub-windows (large).
		_, _ = s.planCount(ctx, typ, timeBounds(q.Since, q.Until))
	}
	if q.Level != bulkdata.LevelSystem || len(q.TypeFilters) > 0 || s.opts.SegmentResources < 0 {
		return []string{""}, nil
	}
	return s.timeSegments(ctx, q, typ)
}

// timeSegments splits a large type into _lastUpdated ranges of about
// SegmentResources each, when the upstream counts (_summary=count) and
// sorts by _lastUpdated. Anything unexpected gives one segment.
func (s *Source) timeSegments(ctx context.Context, q export.Query, typ string) ([]string, error) {
	bounds := timeBounds(q.Since, q.Until)
	total, err := s.planCount(ctx, typ, bounds)
	if err != nil {
		s.opts.Log.InfoContext(ctx, "upstream count failed; one segment", "type", typ, "err", err)
		return []string{""}, nil
	}
	if total == 0 {
		return nil, nil
	}
	if total <= s.opts.SegmentResources {
		return []string{""}, nil
	}
	first, errF := s.edge(ctx, typ, bounds, "_lastUpdated")
	last, errL := s.edge(ctx, typ, bounds, "-_lastUpdated")
	if errF != nil || errL != nil || !first.Before(last) {
		s.opts.Log.InfoContext(ctx, "upstream does not sort by _lastUpdated; one segment", "type", typ)
		return []string{""}, nil
	}
	n := int(math.Ceil(float64(total) / float64(s.opts.SegmentResources)))
	n = min(n, s.opts.MaxSegments)
	lo := first.Add(-time.Millisecond)
	if q.Since != nil && q.Since.After(lo) {
		lo = *q.Since
	}
	hi := *q.Until
	step := last.Sub(lo) / time.Duration(n)
	if step < time.Millisecond {
		return []string{""}, nil
	}
	segs := make([]string, 0, n)
	from := lo
	for i := 0; i < n; i++ {
		to := lo.Add(step * time.Duration(i+1)).Truncate(time.Millisecond)
		if i == n-1 {
			to = hi
		}
		segs = append(segs, "t"+fhir.FormatInstant(from)+"~"+fhir.FormatInstant(to))
		from = to
	}
	return segs, nil
}

// timeBounds maps _since and the upper bound to _lastUpdated parameters.
func timeBounds(since, until *time.Time) url.Values {
	v := url.Values{}
	if since != nil {
		v.Add("_lastUpdated", "gt"+fhir.FormatInstant(*since))
	}
	if until != nil {
		v.Add("_lastUpdated", "le"+fhir.FormatInstant(*until))
	}
	return v
}

// count asks the upstream how many resources of typ are in bounds.
func (s *Source) count(ctx context.Context, typ string, bounds url.Values) (int64, error) {
	q := cloneValues(bounds)
	q.Set("_summary", "count")
	body, err := s.read(ctx, typ+"?"+q.Encode())
	if err != nil {
		return 0, err
	}
	total := gjson.GetBytes(body, "total")
	if total.Type != gjson.Number {
		return 0, errNoTotal
	}
	return total.Int(), nil
}

// planCount is count, reused for ten minutes per type and bounds (see
// Source.counts).
func (s *Source) planCount(ctx context.Context, typ string, bounds url.Values) (int64, error) {
	key := typ + "?" + bounds.Encode()
	s.mu.Lock()
	c, ok := s.counts[key]
	s.mu.Unlock()
	if ok && time.Since(c.at) < 10*time.Minute {
		return c.n, nil
	}
	n, err := s.count(ctx, typ, bounds)
	if err != nil {
		return n, err
	}
	s.mu.Lock()
	if s.counts == nil || len(s.counts) > 4096 {
		s.counts = map[string]cachedCount{}
	}
	s.counts[key] = cachedCount{at: time.Now(), n: n}
	s.mu.Unlock()
	return n, nil
}

// edge returns the lastUpdated of the first resource in the given order.
func (s *Source) edge(ctx context.Context, typ string, bounds url.Values, sortBy string) (time.Time, error) {
	q := cloneValues(bounds)
	q.Set("_sort", sortBy)
	q.Set("_count", "1")
	q.Set("_elements", "id,meta")
	body, err := s.read(ctx, typ+"?"+q.Encode())
	if err != nil {
		return time.Time{}, err
	}
	lu := gjson.GetBytes(body, "entry.0.resource.meta.lastUpdated").Str
	t, ok := fhir.ParseLastUpdated(lu)
	if !ok {
		return time.Time{}, fmt.Errorf("no lastUpdated on the first entry")
	}
	return t, nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// Open implements export.Source.
func (s *Source) Open(ctx context.Context, q export.Query, typ, seg, cursor string) (export.Reader, error) {
	pos, err := parsePosition(cursor)
	if err != nil {
		return nil, err
	}
	bounds := timeBounds(q.Since, q.Until)
	lo, hi := q.Since, q.Until
	var patients []string
	var batchOf map[string]int
	batch := 0
	switch {
	case strings.HasPrefix(seg, "t"):
		from, to, ok := strings.Cut(seg[1:], "~")
		f, err1 := fhir.ParseInstant(from)
		t, err2 := fhir.ParseInstant(to)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad segment %q", seg)
		}
		bounds = timeBounds(&f, &t)
		lo, hi = &f, &t
	case strings.HasPrefix(seg, "p"):
		i, err := strconv.Atoi(seg[1:])
		if err != nil || i < 0 {
			return nil, fmt.Errorf("bad segment %q", seg)
		}
		all, err := s.selectedPatients(ctx, q)
		if err != nil {
			return nil, err
		}
		batches := s.batches(all)
		if i >= len(batches) {
			return nil, fmt.Errorf("bad segment %q: %d patient batches", seg, len(batches))
		}
		patients, batch = batches[i], i
		batchOf = map[string]int{}
		for b, ids := range batches {
			for _, id := range ids {
				batchOf[id] = b
			}
		}
	case seg != "":
		return nil, fmt.Errorf("bad segment %q", seg)
	}

	base := cloneValues(bounds)
	// _elements upstream would take away what the _typeFilter checks read.
	if len(q.Elements) > 0 && len(q.TypeFilters) == 0 && s.honoursElements(ctx, typ) {
		base.Set("_elements", strings.Join(q.Elements, ","))
	}
	filters := []url.Values{{}}
	var checks []*typefilter.Filter
	if len(q.TypeFilters) > 0 {
		filters = filters[:0]
		for _, f := range q.TypeFilters {
			v, err := url.ParseQuery(f)
			if err != nil {
				return nil, fmt.Errorf("bad _typeFilter %q: %w", f, err)
			}
			// Kick-off refuses what cannot be checked here.
			check, err := typefilter.Parse(typ, f)
			if err != nil {
				return nil, fmt.Errorf("_typeFilter %s?%s cannot be checked here: %w", typ, f, err)
			}
			filters = append(filters, v)
			checks = append(checks, check)
		}
	}
	r := &reader{
		src: s, typ: typ, filters: filters, checks: checks, bounds: bounds, lo: lo, hi: hi,
		seen: map[string]bool{}, live: pos, cur: pos,
		anyPatient: q.Level != bulkdata.LevelSystem && !compartmentSearch(q),
		sorted:     state(q).Sorted,
		idSort:     state(q).IDTieBreak,
	}
	comps := []fhir.CompartmentParam{{}}
	if compartmentSearch(q) {
		r.batchOf, r.batch = batchOf, batch
		comps = nil
		for _, c := range fhir.PatientCompartmentParams(typ) {
			// One search per set of paths: Invoice's patient and subject
			// find the same resources.
			if !slices.ContainsFunc(comps, func(d fhir.CompartmentParam) bool { return slices.Equal(c.Paths, d.Paths) }) {
				comps = append(comps, c)
			}
		}
		if typ == "Patient" {
			comps = append([]fhir.CompartmentParam{{Name: "_id"}}, comps...)
		}
		if len(patients) == 0 {
			comps = nil // nothing to read
		}
	}
	r.comps = comps
	// A large segment reads its sub-windows side by side.
	if cursor == "" && len(comps) > 0 && s.opts.KeysetWindows > 1 && s.large(q, typ, seg, len(patients)) {
		if r.keyset() {
			r.live.Cuts = s.windowCuts(ctx, typ, bounds, lo, hi)
		} else {
			r.live.Cuts = s.sampleCuts(ctx, typ, bounds, lo, hi)
		}
		r.cur.Cuts = r.live.Cuts
	}
	wins, err := windows(r.live.Cuts, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("bad cursor %q for segment %q: %w", cursor, seg, err)
	}
	for fi, f := range filters {
		for ci, c := range comps {
			for wi, w := range wins {
				p := cloneValues(base)
				for k, v := range f {
					p[k] = append(p[k], v...)
				}
				if c.Name != "" {
					refs := make([]string, len(patients))
					for i, id := range patients {
						refs[i] = id
						if c.Name != "_id" {
							refs[i] = "Patient/" + id
						}
					}
					p.Set(c.Name, strings.Join(refs, ","))
				}
				if len(wins) > 1 {
					p["_lastUpdated"] = w.params
				}
				r.searches = append(r.searches, search{params: p, filter: fi, comp: ci, window: wi, lo: w.lo, hi: w.hi})
			}
		}
	}
	if pos.Search > len(r.searches) {
		return nil, fmt.Errorf("bad cursor %q for segment %q", cursor, seg)
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.startReadahead()
	return r, nil
}

// window is one _lastUpdated sub-window of a segment: its bounds as
// search parameters and as times (nil: the segment's).
type window struct {
	params []string
	lo, hi *time.Time
}

// windows are the sub-windows cuts split the segment (lo, hi] into, in
// order; one window, the segment, without cuts.
func windows(cuts []string, lo, hi *time.Time) ([]window, error) {
	if len(cuts) == 0 {
		return []window{{}}, nil
	}
	edges := make([]*time.Time, 0, len(cuts)+2)
	edges = append(edges, lo)
	for _, c := range cuts {
		t, err := fhir.ParseInstant(c)
		if err != nil {
			return nil, fmt.Errorf("bad window cut %q", c)
		}
		if prev := edges[len(edges)-1]; (prev != nil && !t.After(*prev)) || (hi != nil && !t.Before(*hi)) {
			return nil, fmt.Errorf("window cut %q out of order", c)
		}
		edges = append(edges, &t)
	}
	edges = append(edges, hi)
	out := make([]window, 0, len(cuts)+1)
	for i := 0; i+1 < len(edges); i++ {
		w := window{lo: edges[i], hi: edges[i+1]}
		if w.lo != nil {
			w.params = append(w.params, "gt"+fhir.FormatInstant(*w.lo))
		}
		if w.hi != nil {
			w.params = append(w.params, "le"+fhir.FormatInstant(*w.hi))
		}
		out = append(out, w)
	}
	return out, nil
}

// sampleCuts splits a segment of an upstream that cannot sort into
// KeysetWindows sub-windows at the quantiles of the lastUpdated on one
// page of its search (one request): a sample of the segment, in whatever
// order the upstream keeps. Anything unexpected gives no cuts.
func (s *Source) sampleCuts(ctx context.Context, typ string, bounds url.Values, lo, hi *time.Time) []string {
	q := cloneValues(bounds)
	q.Set("_count", strconv.Itoa(s.opts.PageSize))
	q.Set("_elements", "id,meta")
	body, err := s.read(ctx, typ+"?"+q.Encode())
	if err != nil {
		return nil
	}
	more := false
	gjson.GetBytes(body, "link").ForEach(func(_, l gjson.Result) bool {
		more = more || l.Get("relation").Str == "next"
		return true
	})
	if !more {
		return nil // the segment fits on one page
	}
	var at []time.Time
	gjson.GetBytes(body, "entry.#.resource.meta.lastUpdated").ForEach(func(_, v gjson.Result) bool {
		if t, ok := fhir.ParseLastUpdated(v.Str); ok && (lo == nil || t.After(*lo)) && (hi == nil || !t.After(*hi)) {
			at = append(at, t.Truncate(time.Millisecond))
		}
		return true
	})
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	k := s.opts.KeysetWindows
	var cuts []string
	var prev time.Time
	for i := 1; i < k && len(at) > 0; i++ {
		c := at[len(at)*i/k]
		if (!prev.IsZero() && !c.After(prev)) || (lo != nil && !c.After(*lo)) || (hi != nil && !c.Before(*hi)) {
			continue
		}
		cuts = append(cuts, fhir.FormatInstant(c))
		prev = c
	}
	return cuts
}

// large reports whether a segment is worth reading in sub-windows: more
// than two pages, as far as the counts Plan asked tell (cached; Open asks
// none). A _lastUpdated range exists because its type is large; a patient
// batch holds about its share of the type's resources.
func (s *Source) large(q export.Query, typ, seg string, patients int) bool {
	if strings.HasPrefix(seg, "t") {
		return true
	}
	bounds := timeBounds(q.Since, q.Until)
	n, ok := s.cachedCount(typ, bounds)
	if !ok {
		return false
	}
	if strings.HasPrefix(seg, "p") && typ != "Patient" {
		all, ok := s.cachedCount("Patient", bounds)
		if !ok || all <= 0 {
			return false
		}
		n = n * int64(patients) / all
	} else if strings.HasPrefix(seg, "p") {
		n = int64(patients)
	}
	return n > 2*int64(s.opts.PageSize)
}

// cachedCount is planCount's answer if it has one.
func (s *Source) cachedCount(typ string, bounds url.Values) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.counts[typ+"?"+bounds.Encode()]
	if !ok || time.Since(c.at) >= 10*time.Minute {
		return 0, false
	}
	return c.n, true
}

// windowCuts splits a segment paged by keyset into KeysetWindows
// sub-windows of equal time between the first and the last lastUpdated in
// it (two requests, side by side unless MaxInFlight is 1, as Plan's edge
// probes). Anything unexpected gives no cuts: the segment is read as one
// search.
func (s *Source) windowCuts(ctx context.Context, typ string, bounds url.Values, lo, hi *time.Time) []string {
	var first, last time.Time
	var errF, errL error
	if s.opts.MaxInFlight > 1 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			last, errL = s.edge(ctx, typ, bounds, "-_lastUpdated")
		}()
		first, errF = s.edge(ctx, typ, bounds, "_lastUpdated")
		wg.Wait()
	} else {
		first, errF = s.edge(ctx, typ, bounds, "_lastUpdated")
		last, errL = s.edge(ctx, typ, bounds, "-_lastUpdated")
	}
	if errF != nil || errL != nil || !first.Before(last) {
		return nil
	}
	from := first.Add(-time.Millisecond)
	if lo != nil && lo.After(from) {
		from = *lo
	}
	k := s.opts.KeysetWindows
	span := last.Sub(from)
	var cuts []string
	prev := from
	for i := 1; i < k; i++ {
		c := from.Add(span / time.Duration(k) * time.Duration(i)).Truncate(time.Millisecond)
		if !c.After(prev) || !c.Before(last) || (hi != nil && !c.Before(*hi)) {
			continue
		}
		cuts = append(cuts, fhir.FormatInstant(c))
		prev = c
	}
	return cuts
}

// ListsDeletions implements export.DeletionSource: the upstream's
// CapabilityStatement offers history-type for typ.
func (s *Source) ListsDeletions(ctx context.Context, typ string) bool {
	if _, err := s.Types(ctx); err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.history[typ]
}

// OpenDeleted implements export.DeletionSource from [type]/_history with
// _since: each DELETE entry in (since, until] whose resource does not
// exist now. A resource deleted twice in the window is listed twice.
func (s *Source) OpenDeleted(ctx context.Context, q export.Query, typ, cursor string) (export.Reader, error) {
	if q.Since == nil {
		return nil, fmt.Errorf("deletions need _since")
	}
	pos, err := parsePosition(cursor)
	if err != nil {
		return nil, err
	}
	params := url.Values{"_since": {fhir.FormatInstant(*q.Since)}}
	r := &reader{
		src: s, typ: typ, history: true, since: q.Since, until: q.Until,
		searches: []search{{params: params}}, seen: map[string]bool{}, live: pos, cur: pos,
	}
	if pos.Search > 1 {
		return nil, fmt.Errorf("bad cursor %q", cursor)
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	r.startReadahead()
	return r, nil
}

// honoursElements probes once per type whether the upstream applies
// _elements (a subsetted resource carries the SUBSETTED tag). When it does,
// _elements is sent upstream and less data travels; the engine subsets
// every resource anyway, so the result is the same either way.
func (s *Source) honoursElements(ctx context.Context, typ string) bool {
	s.mu.Lock()
	ok, known := s.elements[typ]
	s.mu.Unlock()
	if known {
		return ok
	}
	body, err := s.read(ctx, typ+"?_count=1&_elements=id")
	if err != nil {
		return false // not cached: a later chunk probes again
	}
	ok = false
	gjson.GetBytes(body, "entry.0.resource.meta.tag").ForEach(func(_, t gjson.Result) bool {
		ok = t.Get("code").Str == fhir.SubsettedCode
		return !ok
	})
	s.mu.Lock()
	s.elements[typ] = ok
	s.mu.Unlock()
	return ok
}

func compactJSON(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, &SyntaxError{Err: err}
	}
	return buf.Bytes(), nil
}
