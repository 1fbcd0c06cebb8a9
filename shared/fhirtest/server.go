// Package fhirtest is a small FHIR R4 server over an in-memory set of
// resources, written for bulkfhir's tests and benchmarks of the FHIR REST
// source. It has real paging semantics: a search is evaluated once into a
// snapshot and served page by page through next links (relative or
// absolute), as HAPI does. It supports type-level search (GET and POST
// _search) with _id, _lastUpdated (gt/ge/lt/le/eq), _count, _sort by
// _lastUpdated, _summary=count, _elements, the Patient compartment's
// reference parameters and simple token parameters; read; type-level
// _history with deletions; and a CapabilityStatement. Faults (429 bursts
// with Retry-After, 5xx, slow pages, pretty-printing, broken next links) are
// injected through Options.
package fhirtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Options shape the server's behaviour.
type Options struct {
	// AbsoluteLinks makes next links absolute (default: relative to the
	// base, which clients must resolve).
	AbsoluteLinks bool
	// LinksLast writes a Bundle's link array after its entries.
	LinksLast bool
	// Pretty indents every response.
	Pretty bool
	// NoSort rejects _sort with 400; NoElements ignores _elements;
	// NoCount ignores _summary=count and leaves total out of Bundles.
	NoSort, NoElements, NoCount bool
	// MaxCount caps _count (default 1000).
	MaxCount int
	// MaxOffset refuses, with 400, a page starting past this many entries
	// (0: no cap), as Medplum (10,000), HAPI and Azure do.
	MaxOffset int
	// LivePaging evaluates the search afresh for every page and serves the
	// page's offset into the new result (as servers that page by SQL
	// OFFSET do), instead of paging a snapshot taken by the first page.
	LivePaging bool
	// Unknown says what a search parameter outside the server's list
	// (KnownParams, and those of the Patient compartment) does: "" or
	// "match" matches it as a token against the element of that name,
	// "ignore" leaves it out (FHIR's default handling, which returns more
	// than was asked), "reject" answers 400.
	Unknown string
	// IgnoreCompartment ignores the Patient compartment's search
	// parameters (while listing them), as a server that does not know them
	// would.
	IgnoreCompartment bool
	// IgnoreLastUpdated ignores _lastUpdated (as a server that does not
	// support it and drops unknown parameters would).
	IgnoreLastUpdated bool
	// IgnoreParams are search parameters the server lists but does not
	// apply (as a server that stores a filter and never uses it).
	IgnoreParams []string
	// Token, when set, is the bearer token every request must carry.
	Token string
	// Fault, when set, is asked before each request is served; a non-nil
	// Fault stops the request with its status (or delays it).
	Fault func(r *http.Request, n int64) *Fault
}

// Fault is an injected failure or delay.
type Fault struct {
	Status     int           // 0: serve the request after Delay
	RetryAfter string        // Retry-After header value
	Delay      time.Duration // before answering
	// LoopNext makes the page's next link point back at the page itself.
	LoopNext bool
	// Truncate cuts the response body after this many bytes.
	Truncate int
	// Header is set on the fault's answer (for example RateLimit).
	Header map[string]string
}

// Profiles are the upstream behaviours the REST source is tested against,
// by name; each export test runs against every one.
func Profiles() map[string]Options {
	return map[string]Options{
		"plain":               {},
		"offset cap":          {MaxOffset: 20, LivePaging: true},
		"live paging":         {LivePaging: true},
		"links after entries": {LinksLast: true, AbsoluteLinks: true},
		"no sort":             {NoSort: true},
		"ignores unknown":     {Unknown: "ignore"},
		"ignores compartment": {IgnoreCompartment: true},
		"rejects unknown":     {Unknown: "reject"},
		"ratelimit no retry-after": {Fault: func(r *http.Request, n int64) *Fault {
			if r.URL.Path == "/metadata" || n%5 != 0 {
				return nil
			}
			return &Fault{Status: http.StatusTooManyRequests, Header: map[string]string{"RateLimit": `"default";r=0;t=0`, "X-RateLimit-Reset": "0"}}
		}},
	}
}

// KnownParams are the search parameters the server lists for every type
// (beside those of the Patient compartment), all matched as tokens.
var KnownParams = []string{"_id", "_lastUpdated", "status", "category", "code", "clinical-status", "verification-status", "class", "gender", "type", "intent", "active", "name", "identifier"}

// Server is the test server. Create it with New, load data, then serve it
// (for example with httptest.NewServer(s)).
type Server struct {
	opts Options

	mu        sync.RWMutex
	types     map[string]*typeData
	snapshots map[string]*snapshot
	nextSnap  int64
	requests  atomic.Int64
	// tokenCheck, when set, decides whether a bearer token is valid.
	tokenCheck atomic.Pointer[func(string) bool]
}

// SetTokenCheck makes every request carry a bearer token that check
// accepts (for tokens a TokenEndpoint issued).
func (s *Server) SetTokenCheck(check func(bearer string) bool) { s.tokenCheck.Store(&check) }

type record struct {
	id          string
	lastUpdated time.Time
	raw         []byte
}

type typeData struct {
	records []*record // sorted by id
	byID    map[string]*record
	deleted []tombstone
	// refs indexes compartment references: path → patient id → records.
	refs map[string]map[string]map[*record]bool
}

type tombstone struct {
	id string
	at time.Time
}

type snapshot struct {
	typ     string
	records []*record
	sel     *fhir.ElementSelector
	params  string
}

// New returns an empty server.
func New(opts Options) *Server {
	if opts.MaxCount <= 0 {
		opts.MaxCount = 1000
	}
	return &Server{opts: opts, types: map[string]*typeData{}, snapshots: map[string]*snapshot{}}
}

// Requests is how many requests the server has received.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Add stores resources (raw JSON each), replacing any with the same type and
// id. A resource without meta.lastUpdated gets the current time.
func (s *Server) Add(resources ...[]byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, raw := range resources {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return fmt.Errorf("fhirtest: add: %w", err)
		}
		h, ok := fhir.Peek(buf.Bytes())
		if !ok || h.ID == "" {
			return fmt.Errorf("fhirtest: add: resource without resourceType or id")
		}
		lu, ok := fhir.ParseLastUpdated(h.LastUpdated)
		if !ok {
			lu = time.Now().UTC()
		}
		td := s.types[h.ResourceType]
		if td == nil {
			td = &typeData{byID: map[string]*record{}}
			s.types[h.ResourceType] = td
		}
		rec := &record{id: h.ID, lastUpdated: lu, raw: append([]byte(nil), buf.Bytes()...)}
		if old := td.byID[h.ID]; old != nil {
			*old = *rec
		} else {
			td.byID[h.ID] = rec
			td.records = append(td.records, rec)
		}
		td.refs = nil
	}
	for _, td := range s.types {
		sort.Slice(td.records, func(i, j int) bool { return td.records[i].id < td.records[j].id })
	}
	return nil
}

// LoadDir adds every resource in the *.ndjson files of dir.
func (s *Server) LoadDir(dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	if err != nil {
		return err
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 256<<20)
		var batch [][]byte
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			batch = append(batch, append([]byte(nil), sc.Bytes()...))
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return fmt.Errorf("fhirtest: read %s: %w", f, err)
		}
		if err := s.Add(batch...); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes a resource, recording the deletion at time at for _history.
func (s *Server) Delete(typ, id string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	td := s.types[typ]
	if td == nil || td.byID[id] == nil {
		return
	}
	delete(td.byID, id)
	for i, r := range td.records {
		if r.id == id {
			td.records = append(td.records[:i:i], td.records[i+1:]...)
			break
		}
	}
	td.deleted = append(td.deleted, tombstone{id: id, at: at.UTC()})
	td.refs = nil
}

// ServeHTTP implements http.Handler. The service base is the server root.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := s.requests.Add(1)
	var f *Fault
	if s.opts.Fault != nil {
		f = s.opts.Fault(r, n)
	}
	if f != nil {
		if f.Delay > 0 {
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if f.Status != 0 {
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			for k, v := range f.Header {
				w.Header().Set(k, v)
			}
			s.outcome(w, f.Status, "transient", "injected fault")
			return
		}
	}
	if s.opts.Token != "" && r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
		s.outcome(w, http.StatusUnauthorized, "login", "a valid bearer token is required")
		return
	}
	if check := s.tokenCheck.Load(); check != nil {
		bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !(*check)(bearer) {
			s.outcome(w, http.StatusUnauthorized, "login", "a valid bearer token is required")
			return
		}
	}
	path := strings.Trim(r.URL.Path, "/")
	parts := strings.Split(path, "/")
	switch {
	case path == "metadata":
		s.capabilities(w)
	case path == "" && r.URL.Query().Get("_getpages") != "":
		s.servePage(w, r, f)
	case len(parts) == 1 && r.Method == http.MethodGet:
		s.search(w, r, parts[0], r.URL.Query(), f)
	case len(parts) == 2 && parts[1] == "_search" && r.Method == http.MethodPost:
		if err := r.ParseForm(); err != nil {
			s.outcome(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		s.search(w, r, parts[0], r.PostForm, f)
	case len(parts) == 2 && parts[1] == "_history":
		s.history(w, r, parts[0])
	case len(parts) == 2 && r.Method == http.MethodGet:
		s.read(w, parts[0], parts[1])
	default:
		s.outcome(w, http.StatusNotFound, "not-found", "no route for "+r.Method+" "+r.URL.Path)
	}
}

func (s *Server) outcome(w http.ResponseWriter, status int, code, text string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":%q,"diagnostics":%q}]}`, code, text)
}

func (s *Server) capabilities(w http.ResponseWriter) {
	s.mu.RLock()
	var types []string
	for t := range s.types {
		types = append(types, t)
	}
	s.mu.RUnlock()
	sort.Strings(types)
	var res []string
	for _, t := range types {
		var params []string
		for _, p := range knownParams(t) {
			params = append(params, fmt.Sprintf(`{"name":%q,"type":"token"}`, p))
		}
		res = append(res, fmt.Sprintf(`{"type":%q,"interaction":[{"code":"read"},{"code":"search-type"},{"code":"history-type"}],"searchParam":[%s]}`, t, strings.Join(params, ",")))
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	fmt.Fprintf(w, `{"resourceType":"CapabilityStatement","status":"active","kind":"instance","fhirVersion":"4.0.1","format":["json"],"rest":[{"mode":"server","resource":[%s]}]}`, strings.Join(res, ","))
}

func (s *Server) read(w http.ResponseWriter, typ, id string) {
	s.mu.RLock()
	var rec *record
	if td := s.types[typ]; td != nil {
		rec = td.byID[id]
	}
	s.mu.RUnlock()
	if rec == nil {
		s.outcome(w, http.StatusNotFound, "not-found", typ+"/"+id+" is not known")
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.Write(s.format(rec.raw))
}

func (s *Server) format(raw []byte) []byte {
	if !s.opts.Pretty {
		return raw
	}
	var buf bytes.Buffer
	_ = json.Indent(&buf, raw, "  ", "    ")
	return buf.Bytes()
}

// search evaluates a type-level search into a snapshot and serves its
// first page.
func (s *Server) search(w http.ResponseWriter, r *http.Request, typ string, q url.Values, f *Fault) {
	if !fhir.IsResourceType(typ) {
		s.outcome(w, http.StatusNotFound, "not-supported", "unknown resource type "+typ)
		return
	}
	count := s.opts.MaxCount
	if c := q.Get("_count"); c != "" {
		n, err := strconv.Atoi(c)
		if err != nil || n < 0 {
			s.outcome(w, http.StatusBadRequest, "invalid", "bad _count")
			return
		}
		count = min(n, s.opts.MaxCount)
	}
	recs, sel, err := s.evaluate(typ, q)
	if err != nil {
		s.outcome(w, http.StatusBadRequest, "invalid", err.Error())
		return
	}
	if q.Get("_summary") == "count" && !s.opts.NoCount {
		w.Header().Set("Content-Type", "application/fhir+json")
		fmt.Fprintf(w, `{"resourceType":"Bundle","type":"searchset","total":%d}`, len(recs))
		return
	}
	s.mu.Lock()
	s.nextSnap++
	id := "s" + strconv.FormatInt(s.nextSnap, 10)
	s.snapshots[id] = &snapshot{typ: typ, records: recs, sel: sel, params: q.Encode()}
	s.mu.Unlock()
	s.writePage(w, r, id, 0, count, f)
}

func (s *Server) servePage(w http.ResponseWriter, r *http.Request, f *Fault) {
	q := r.URL.Query()
	off, err1 := strconv.Atoi(q.Get("_getpagesoffset"))
	count, err2 := strconv.Atoi(q.Get("_count"))
	if err1 != nil || err2 != nil || off < 0 || count < 0 {
		s.outcome(w, http.StatusBadRequest, "invalid", "bad paging parameters")
		return
	}
	s.writePage(w, r, q.Get("_getpages"), off, count, f)
}

func (s *Server) pageURL(r *http.Request, snap string, off, count int) string {
	rel := fmt.Sprintf("?_getpages=%s&_getpagesoffset=%d&_count=%d", snap, off, count)
	if !s.opts.AbsoluteLinks {
		return rel
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/" + rel
}

func (s *Server) writePage(w http.ResponseWriter, r *http.Request, id string, off, count int, f *Fault) {
	s.mu.RLock()
	snap := s.snapshots[id]
	s.mu.RUnlock()
	if snap == nil {
		s.outcome(w, http.StatusGone, "not-found", "search "+id+" has expired")
		return
	}
	if s.opts.MaxOffset > 0 && off > s.opts.MaxOffset {
		s.outcome(w, http.StatusBadRequest, "too-costly", fmt.Sprintf("search offset %d is past the server's limit of %d", off, s.opts.MaxOffset))
		return
	}
	if s.opts.LivePaging && off > 0 {
		q, _ := url.ParseQuery(snap.params)
		recs, sel, err := s.evaluate(snap.typ, q)
		if err != nil {
			s.outcome(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		snap = &snapshot{typ: snap.typ, records: recs, sel: sel, params: snap.params}
	}
	end := min(off+count, len(snap.records))
	off = min(off, end)
	var links []string
	links = append(links, fmt.Sprintf(`{"relation":"self","url":%q}`, s.pageURL(r, id, off, count)))
	if f != nil && f.LoopNext {
		links = append(links, fmt.Sprintf(`{"relation":"next","url":%q}`, s.pageURL(r, id, off, count)))
	} else if end < len(snap.records) && count > 0 {
		links = append(links, fmt.Sprintf(`{"relation":"next","url":%q}`, s.pageURL(r, id, end, count)))
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, `{"resourceType":"Bundle","id":%q,"type":"searchset",`, id)
	if !s.opts.NoCount {
		fmt.Fprintf(&buf, `"total":%d,`, len(snap.records))
	}
	linkJSON := `"link":[` + strings.Join(links, ",") + `]`
	if !s.opts.LinksLast {
		buf.WriteString(linkJSON + ",")
	}
	buf.WriteString(`"entry":[`)
	s.mu.RLock() // Add updates records in place
	for i, rec := range snap.records[off:end] {
		if i > 0 {
			buf.WriteByte(',')
		}
		raw := rec.raw
		if snap.sel != nil {
			raw, _ = snap.sel.Subset(snap.typ, raw)
		}
		fmt.Fprintf(&buf, `{"fullUrl":"%s/%s","resource":`, snap.typ, rec.id)
		buf.Write(s.format(raw))
		buf.WriteString(`,"search":{"mode":"match"}}`)
	}
	s.mu.RUnlock()
	buf.WriteString("]")
	if s.opts.LinksLast {
		buf.WriteString("," + linkJSON)
	}
	buf.WriteString("}")
	body := buf.Bytes()
	if f != nil && f.Truncate > 0 && f.Truncate < len(body) {
		body = body[:f.Truncate]
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.Write(body)
}

// history serves [type]/_history?_since=: the current versions updated
// since, and the deletions since (newest first).
func (s *Server) history(w http.ResponseWriter, r *http.Request, typ string) {
	var since time.Time
	if v := r.URL.Query().Get("_since"); v != "" {
		t, err := fhir.ParseInstant(v)
		if err != nil {
			s.outcome(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		since = t
	}
	type ent struct {
		at   time.Time
		json string
	}
	var out []ent
	s.mu.RLock()
	if td := s.types[typ]; td != nil {
		for _, rec := range td.records {
			if rec.lastUpdated.After(since) {
				out = append(out, ent{rec.lastUpdated, fmt.Sprintf(`{"fullUrl":"%s/%s","resource":%s,"request":{"method":"PUT","url":"%s/%s"},"response":{"status":"200","lastModified":%q}}`,
					typ, rec.id, rec.raw, typ, rec.id, fhir.FormatInstant(rec.lastUpdated))})
			}
		}
		for _, d := range td.deleted {
			if d.at.After(since) {
				out = append(out, ent{d.at, fmt.Sprintf(`{"fullUrl":"%s/%s","request":{"method":"DELETE","url":"%s/%s"},"response":{"status":"204","lastModified":%q}}`,
					typ, d.id, typ, d.id, fhir.FormatInstant(d.at))})
			}
		}
	}
	s.mu.RUnlock()
	sort.SliceStable(out, func(i, j int) bool { return out[i].at.After(out[j].at) })
	entries := make([]string, len(out))
	for i, e := range out {
		entries[i] = e.json
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	fmt.Fprintf(w, `{"resourceType":"Bundle","type":"history","total":%d,"entry":[%s]}`, len(out), strings.Join(entries, ","))
}
