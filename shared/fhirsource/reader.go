package fhirsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// search is one upstream type-level search of a segment. A segment runs
// its searches in order; a resource that an earlier search of the segment
// also matches is dropped, so the merged result has no duplicates.
type search struct {
	params url.Values // without _count
	// filter is the index of the _typeFilter query, comp the index of the
	// compartment parameter (0 when there is none).
	filter, comp int
}

// position is where a reader stands: a search, the page being read (""
// for the search's first page) and how many of its entries were consumed.
type position struct {
	Search int    `json:"s"`
	Page   string `json:"p,omitempty"`
	Skip   int    `json:"n,omitempty"`
}

func (p position) String() string {
	b, _ := json.Marshal(p)
	return string(b)
}

func parsePosition(s string) (position, error) {
	var p position
	if s == "" {
		return p, nil
	}
	if err := json.Unmarshal([]byte(s), &p); err != nil || p.Search < 0 || p.Skip < 0 {
		return p, fmt.Errorf("bad cursor %q", s)
	}
	return p, nil
}

// dedupeBatch is how many resources of a later _typeFilter search are
// checked against the earlier filters in one upstream request.
const dedupeBatch = 100

type item struct {
	line []byte
	id   string
	pos  position
}

// reader reads one segment: its searches one after the other, each page by
// page, fetching the next page while the current one is read.
type reader struct {
	src      *Source
	ctx      context.Context
	cancel   context.CancelFunc
	typ      string
	searches []search
	filters  []url.Values // the _typeFilter queries, for dedupe checks
	bounds   url.Values   // the _lastUpdated bounds, for dedupe checks
	comps    []fhir.CompartmentParam
	// patients is the segment's patient batch (nil: no compartment
	// search); anyPatient keeps only resources in some patient's
	// compartment (patient-level export of all patients).
	patients   map[string]bool
	anyPatient bool
	// history reads [type]/_history for deletions: the reader returns
	// "Type/id" of each resource deleted in (since, until] that does not
	// exist now.
	history      bool
	since, until *time.Time

	live position // where the stream is
	cur  position // after the last resource returned
	pg   *page
	body io.ReadCloser
	seen map[string]bool // pages read by this reader: a repeat is a loop
	// skipTo is how many entries of the open page were consumed before it
	// was (re)opened; bodyRetries counts reopenings after a cut-short body.
	skipTo, bodyRetries int
	pre                 *prefetch
	buf                 []item // resources of a later filter, awaiting the dedupe check
	// bad is an unusable entry, reported (at badPos) once the resources
	// before it were returned.
	bad    *export.BadRecordError
	badPos position
	out    []byte
}

type prefetch struct {
	url  string
	done chan struct{}
	resp *http.Response
	err  error
}

func (r *reader) Cursor() string { return r.cur.String() }

func (r *reader) Close() error {
	r.cancel()
	r.closePage()
	if r.pre != nil {
		<-r.pre.done
		if r.pre.resp != nil {
			r.pre.resp.Body.Close()
		}
		r.pre = nil
	}
	return nil
}

func (r *reader) closePage() {
	if r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.pg = nil
}

// Next implements export.Reader.
func (r *reader) Next() ([]byte, error) {
	for {
		if len(r.buf) > 0 {
			it := r.buf[0]
			r.buf = r.buf[1:]
			r.cur = it.pos
			r.out = append(r.out[:0], it.line...)
			return r.out, nil
		}
		if r.bad != nil {
			err := r.bad
			r.bad, r.cur = nil, r.badPos
			return nil, err
		}
		if r.live.Search >= len(r.searches) {
			r.cur = r.live
			return nil, io.EOF
		}
		s := r.searches[r.live.Search]
		if s.filter > 0 || r.history {
			if err := r.fillChecked(); err != nil {
				return nil, r.failed(err)
			}
			continue
		}
		line, _, err := r.nextEntry()
		if err == io.EOF {
			continue // the search ended; the loop moves on
		}
		if err != nil {
			return nil, r.failed(err)
		}
		if line == nil {
			continue // not wanted
		}
		r.cur = r.live
		return line, nil
	}
}

// failed turns a read error into the reader's answer. A permanent upstream
// failure of a page (a 4xx answer, broken JSON, a next-link loop) ends that
// search: it is reported as a bad record, so the export goes on with the
// next search and lists the loss in the manifest's error array. Anything
// else (transient failures that outlived the retries, authorization) is
// returned as it is and stops the chunk.
func (r *reader) failed(err error) error {
	var se *SyntaxError
	var loop *loopError
	if !Permanent(err) && !errors.As(err, &se) && !errors.As(err, &loop) {
		return err
	}
	s := r.live.Search
	where := fmt.Sprintf("%s search %d of %d", r.typ, s+1, len(r.searches))
	if r.live.Page != "" {
		where += " at " + r.live.Page
	}
	r.closePage()
	r.buf = nil
	r.live = position{Search: s + 1}
	r.cur = r.live
	return &export.BadRecordError{
		Position: where,
		Reason:   fmt.Sprintf("%v; the rest of this search was not exported", err),
	}
}

type loopError struct{ url string }

func (e *loopError) Error() string { return "the upstream's next links loop back to " + e.url }

// nextEntry returns the next wanted resource of the current search and its
// id (nil for an entry it dropped), or io.EOF when the search has ended
// (r.live then points at the next search).
func (r *reader) nextEntry() ([]byte, string, error) {
	if r.pg == nil {
		if err := r.openPage(); err != nil {
			return nil, "", err
		}
	}
	line, err := r.pg.Next()
	if err == io.EOF {
		next := r.pg.next
		r.closePage()
		r.bodyRetries = 0
		if next == "" {
			r.live = position{Search: r.live.Search + 1}
			return nil, "", io.EOF
		}
		abs, err := r.src.client.resolve(next)
		if err != nil {
			return nil, "", &SyntaxError{Err: err}
		}
		if r.seen[abs] {
			return nil, "", &loopError{url: abs}
		}
		r.live.Page, r.live.Skip = abs, 0
		return nil, "", nil
	}
	if err != nil {
		r.closePage()
		// What was skipped before the failure stays consumed.
		r.live.Skip = max(r.live.Skip, r.skipTo)
		var se *SyntaxError
		if !errors.As(err, &se) && r.bodyRetries < r.src.opts.MaxRetries {
			// The body was cut short: read the page again, skipping what
			// was consumed.
			r.bodyRetries++
			return nil, "", nil
		}
		return nil, "", err
	}
	r.live.Skip++
	if r.live.Skip <= r.skipTo {
		return nil, "", nil
	}
	if r.history {
		ref := r.deletion()
		_, id, _ := strings.Cut(string(ref), "/")
		return ref, id, nil
	}
	if len(line) == 0 {
		return nil, "", nil // an entry without a resource
	}
	// One pass validates the resource and reads what the filters need.
	h, ok := fhir.Peek(line)
	if !ok {
		r.bad = &export.BadRecordError{
			Position: fmt.Sprintf("%s entry %d of %s", r.typ, r.live.Skip, r.live.Page),
			Reason:   "the upstream sent a resource that is not valid JSON or has no resourceType",
		}
		r.badPos = r.live
		return nil, "", nil
	}
	return r.keep(line, h), h.ID, nil
}

// keep returns line if the segment wants it, else nil.
func (r *reader) keep(line []byte, h fhir.Head) []byte {
	if h.ResourceType != r.typ {
		return nil // an included resource or a search outcome
	}
	s := r.searches[r.live.Search]
	if r.anyPatient && r.typ != "Patient" {
		in := false
		fhir.CompartmentPatients(r.typ, line, func(string) bool { in = true; return false })
		if !in {
			return nil
		}
	}
	if r.patients != nil && !r.inBatch(line) {
		// Never trust the upstream's filter: a server that ignores the
		// compartment parameter (or an unknown patient id) must not turn
		// a Patient or Group export into everything.
		return nil
	}
	if r.patients != nil && s.comp > 0 && r.matchesEarlierComp(line, h.ID, s.comp) {
		return nil
	}
	return line
}

// inBatch reports whether a resource is in the compartment of one of the
// segment's patients.
func (r *reader) inBatch(line []byte) bool {
	in := false
	fhir.CompartmentPatients(r.typ, line, func(id string) bool {
		in = r.patients[id]
		return !in
	})
	return in
}

// deletion returns "Type/id" when the current history entry deleted a
// resource of the type inside the time bounds.
func (r *reader) deletion() []byte {
	if r.pg.method != "DELETE" {
		return nil
	}
	if at, ok := fhir.ParseLastUpdated(r.pg.lastModified); ok {
		if (r.since != nil && !at.After(*r.since)) || (r.until != nil && at.After(*r.until)) {
			return nil
		}
	}
	ref := r.pg.reqURL
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	parts := strings.Split(ref, "/")
	if len(parts) < 2 || parts[len(parts)-2] != r.typ || !validID(parts[len(parts)-1]) {
		return nil
	}
	return []byte(r.typ + "/" + parts[len(parts)-1])
}

// matchesEarlierComp reports whether a resource found through compartment
// parameter k was also found through an earlier one.
func (r *reader) matchesEarlierComp(line []byte, id string, k int) bool {
	for j := 0; j < k; j++ {
		c := r.comps[j]
		if c.Name == "_id" {
			if r.patients[id] {
				return true
			}
			continue
		}
		hit := false
		fhir.ReferencedPatients(line, c.Path, func(pid string) bool {
			hit = r.patients[pid]
			return !hit
		})
		if hit {
			return true
		}
	}
	return false
}

// openPage requests the current page (or takes the prefetched response) and
// positions the stream after the entries already consumed.
func (r *reader) openPage() error {
	u := r.live.Page
	if u == "" {
		var err error
		if u, err = r.firstURL(r.searches[r.live.Search]); err != nil {
			return err
		}
	}
	r.seen[u] = true
	var resp *http.Response
	var err error
	if r.pre != nil && r.pre.url == u {
		<-r.pre.done
		resp, err = r.pre.resp, r.pre.err
		r.pre = nil
	} else {
		resp, err = r.src.client.get(r.ctx, u)
	}
	if err != nil {
		return err
	}
	pg, err := newPage(resp.Body, r.prefetch)
	if err != nil {
		resp.Body.Close()
		return err
	}
	r.pg, r.body = pg, resp.Body
	r.live.Page = u
	r.skipTo, r.live.Skip = r.live.Skip, 0
	return nil
}

// prefetch starts the request for the next page as soon as its link is
// known, so the upstream works on it while this page is read.
func (r *reader) prefetch(next string) {
	if r.pre != nil {
		return
	}
	abs, err := r.src.client.resolve(next)
	if err != nil || r.seen[abs] {
		return
	}
	p := &prefetch{url: abs, done: make(chan struct{})}
	r.pre = p
	go func() {
		defer close(p.done)
		p.resp, p.err = r.src.client.get(r.ctx, abs)
	}()
}

// firstURL is the GET URL of a search's first page.
func (r *reader) firstURL(s search) (string, error) {
	path := r.typ
	if r.history {
		path += "/_history"
	}
	u, err := r.src.client.resolve(path)
	if err != nil {
		return "", err
	}
	q := url.Values{}
	for k, v := range s.params {
		q[k] = v
	}
	q.Set("_count", strconv.Itoa(r.src.opts.PageSize))
	return u + "?" + q.Encode(), nil
}

// fillChecked reads up to dedupeBatch resources of a later _typeFilter
// search, asks the upstream which of them an earlier filter also matches,
// and queues the rest.
func (r *reader) fillChecked() error {
	var batch []item
	search := r.live.Search
	for len(batch) < dedupeBatch && r.live.Search == search {
		line, id, err := r.nextEntry()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if r.bad != nil {
			break // report it after the resources before it
		}
		if line == nil {
			continue
		}
		batch = append(batch, item{line: append([]byte(nil), line...), id: id, pos: r.live})
	}
	if len(batch) == 0 {
		return nil
	}
	ids := make([]string, 0, len(batch))
	for _, it := range batch {
		ids = append(ids, it.id)
	}
	drop := map[string]bool{}
	if r.history {
		// A resource deleted and created again is not deleted.
		found, err := r.src.matching(r.ctx, r.typ, ids, nil, nil)
		if err != nil {
			return err
		}
		drop = found
	}
	for f := 0; f < r.searches[search].filter; f++ {
		found, err := r.src.matching(r.ctx, r.typ, ids, r.bounds, r.filters[f])
		if err != nil {
			return err
		}
		for id := range found {
			drop[id] = true
		}
	}
	for _, it := range batch {
		if !drop[it.id] {
			r.buf = append(r.buf, it)
		}
	}
	if len(r.buf) == 0 {
		r.cur = batch[len(batch)-1].pos
	}
	return nil
}

// matching returns which of ids match the query (a _typeFilter's
// parameters plus the time bounds), by a POST _search on _id.
func (s *Source) matching(ctx context.Context, typ string, ids []string, bounds, filter url.Values) (map[string]bool, error) {
	form := url.Values{}
	for k, v := range bounds {
		form[k] = v
	}
	for k, v := range filter {
		form[k] = append(form[k], v...)
	}
	form.Set("_id", strings.Join(ids, ","))
	form.Set("_elements", "id")
	form.Set("_count", strconv.Itoa(len(ids)))
	resp, err := s.client.search(ctx, typ, form)
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	err = s.eachResource(ctx, resp, typ, func(_ []byte, h fhir.Head) {
		if h.ID != "" {
			found[h.ID] = true
		}
	})
	if err != nil {
		return nil, err
	}
	return found, nil
}

// eachResource calls fn with every valid resource of type typ on the page
// resp holds and on the pages its next links lead to (the line is valid
// during the call). A next link seen before is an error.
func (s *Source) eachResource(ctx context.Context, resp *http.Response, typ string, fn func(line []byte, h fhir.Head)) error {
	seen := map[string]bool{}
	for {
		pg, err := newPage(resp.Body, nil)
		for err == nil {
			var line []byte
			if line, err = pg.Next(); err == nil {
				if h, ok := fhir.Peek(line); ok && h.ResourceType == typ {
					fn(line, h)
				}
			}
		}
		resp.Body.Close()
		if err != io.EOF {
			return err
		}
		if pg.next == "" {
			return nil
		}
		abs, err := s.client.resolve(pg.next)
		if err != nil || seen[abs] {
			return &loopError{url: abs}
		}
		seen[abs] = true
		if resp, err = s.client.get(ctx, abs); err != nil {
			return err
		}
	}
}
