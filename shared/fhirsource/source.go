// Package fhirsource is the Source over an upstream FHIR R4 server's REST
// API: type-level searches paged by next links (absolute or relative),
// _since and the job's upper bound mapped to _lastUpdated=gt…/le…, each
// _typeFilter query run as its own search and the results merged without
// duplicates, the Patient compartment searched through its parameters in
// batches of patient ids, Group membership read from the Group.
//
// Pages are streamed: each entry's resource is copied as compact raw JSON,
// never decoded, and the next page is requested as soon as its link is
// read. A cursor is the search, the page URL and the entries consumed on
// it, so a chunk stopped by its time budget resumes exactly.
//
// Plan splits a large type into _lastUpdated ranges when the upstream
// sorts by _lastUpdated (probed), so the ranges export in parallel.
package fhirsource

import (
	"bytes"
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
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
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
	// PatientBatch is how many patient ids one compartment search names
	// (default 50), which is also the unit of fan-out of Patient and Group
	// exports.
	PatientBatch int
	// SegmentResources is the size above which a type is split into
	// _lastUpdated ranges (default 100,000; negative: never split).
	SegmentResources int64
	// MaxSegments bounds the ranges of one type (default 64).
	MaxSegments int
	// MaxRetries is how often a request is retried (default 6); Backoff
	// the first retry's upper bound (default 500 ms), MaxBackoff the cap on
	// one wait, Retry-After included (default 60 s).
	MaxRetries          int
	Backoff, MaxBackoff time.Duration
	// CacheFor is how long the CapabilityStatement and Group memberships
	// are reused (default 1 minute).
	CacheFor time.Duration
	Log      *slog.Logger
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
		o.PatientBatch = 50
	}
	if o.SegmentResources == 0 {
		o.SegmentResources = 100_000
	}
	if o.MaxSegments <= 0 {
		o.MaxSegments = 64
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 6
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
	if o.CacheFor <= 0 {
		o.CacheFor = time.Minute
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

	mu       sync.Mutex
	types    []string
	history  map[string]bool // types whose history the upstream serves
	typesAt  time.Time
	groups   map[string]cachedGroup
	elements map[string]bool // per type: does the upstream honour _elements?
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
			backoff: opts.Backoff, maxBackoff: opts.MaxBackoff, log: opts.Log,
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
	return s.readTypes(ctx, s.client)
}

// readTypes reads the CapabilityStatement through c and caches its types.
func (s *Source) readTypes(ctx context.Context, c *client) ([]string, error) {
	u, err := c.resolve("metadata")
	if err != nil {
		return nil, err
	}
	resp, err := c.get(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("read upstream CapabilityStatement: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("read upstream CapabilityStatement: %w", err)
	}
	if gjson.GetBytes(body, "resourceType").Str != "CapabilityStatement" {
		return nil, fmt.Errorf("upstream metadata is not a CapabilityStatement")
	}
	set, history := map[string]bool{}, map[string]bool{}
	gjson.GetBytes(body, "rest").ForEach(func(_, rest gjson.Result) bool {
		if m := rest.Get("mode").Str; m != "" && m != "server" {
			return true
		}
		rest.Get("resource").ForEach(func(_, res gjson.Result) bool {
			t := res.Get("type").Str
			if !fhir.IsResourceType(t) {
				return true
			}
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
	s.types, s.history, s.typesAt = types, history, time.Now()
	s.mu.Unlock()
	return types, nil
}

// Ready checks the upstream answers, for a kick-off to fail fast with a
// transient error when it does not: the CapabilityStatement is read afresh
// (so the export sees the upstream's current types), retried once, within
// 10 seconds.
func (s *Source) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	quick := *s.client
	quick.maxRetries = min(quick.maxRetries, 1)
	if _, err := s.readTypes(ctx, &quick); err != nil {
		return fmt.Errorf("upstream not ready: %w", err)
	}
	return nil
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

var errNotFound = errors.New("not found")

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

// Plan implements export.Source.
func (s *Source) Plan(ctx context.Context, q export.Query, typ string) ([]string, error) {
	if compartmentSearch(q) {
		patients, err := s.selectedPatients(ctx, q)
		if err != nil {
			return nil, err
		}
		var segs []string
		for i := 0; i*s.opts.PatientBatch < len(patients); i++ {
			segs = append(segs, "p"+strconv.Itoa(i))
		}
		return segs, nil
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
	total, err := s.count(ctx, typ, bounds)
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
		return 0, fmt.Errorf("no total in the count Bundle")
	}
	return total.Int(), nil
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
	var patients []string
	switch {
	case strings.HasPrefix(seg, "t"):
		from, to, ok := strings.Cut(seg[1:], "~")
		f, err1 := fhir.ParseInstant(from)
		t, err2 := fhir.ParseInstant(to)
		if !ok || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("bad segment %q", seg)
		}
		bounds = timeBounds(&f, &t)
	case strings.HasPrefix(seg, "p"):
		i, err := strconv.Atoi(seg[1:])
		if err != nil || i < 0 {
			return nil, fmt.Errorf("bad segment %q", seg)
		}
		all, err := s.selectedPatients(ctx, q)
		if err != nil {
			return nil, err
		}
		start := i * s.opts.PatientBatch
		patients = all[min(start, len(all)):min(start+s.opts.PatientBatch, len(all))]
	case seg != "":
		return nil, fmt.Errorf("bad segment %q", seg)
	}

	base := cloneValues(bounds)
	if len(q.Elements) > 0 && s.honoursElements(ctx, typ) {
		base.Set("_elements", strings.Join(q.Elements, ","))
	}
	filters := []url.Values{{}}
	if len(q.TypeFilters) > 0 {
		filters = filters[:0]
		for _, f := range q.TypeFilters {
			v, err := url.ParseQuery(f)
			if err != nil {
				return nil, fmt.Errorf("bad _typeFilter %q: %w", f, err)
			}
			filters = append(filters, v)
		}
	}
	r := &reader{
		src: s, typ: typ, filters: filters, bounds: bounds,
		seen: map[string]bool{}, live: pos, cur: pos,
		anyPatient: q.Level != bulkdata.LevelSystem && !compartmentSearch(q),
	}
	comps := []fhir.CompartmentParam{{}}
	if compartmentSearch(q) {
		r.patients = map[string]bool{}
		for _, p := range patients {
			r.patients[p] = true
		}
		comps = fhir.PatientCompartmentParams(typ)
		if typ == "Patient" {
			comps = append([]fhir.CompartmentParam{{Name: "_id"}}, comps...)
		}
		if len(patients) == 0 {
			comps = nil // nothing to read
		}
	}
	r.comps = comps
	for fi, f := range filters {
		for ci, c := range comps {
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
			r.searches = append(r.searches, search{params: p, filter: fi, comp: ci})
		}
	}
	if pos.Search > len(r.searches) {
		return nil, fmt.Errorf("bad cursor %q for segment %q", cursor, seg)
	}
	r.ctx, r.cancel = context.WithCancel(ctx)
	return r, nil
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
