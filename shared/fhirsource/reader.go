package fhirsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/typefilter"
)

// search is one upstream type-level search of a segment. A segment runs
// its searches in order; a resource that an earlier search of the segment
// also matches is dropped, so the merged result has no duplicates.
type search struct {
	params url.Values // without _count
	// filter is the index of the _typeFilter query, comp the index of the
	// compartment parameter (0 when there is none).
	filter, comp int
	// window is the index of the search's _lastUpdated sub-window of the
	// segment (see position.Cuts), lo and hi its bounds (nil: the
	// segment's).
	window int
	lo, hi *time.Time
}

// position is where a reader stands: a search, the page being read (""
// for the search's first page) and how many of its entries were consumed.
//
// On an upstream that sorts by _lastUpdated a search is paged by keyset:
// After is the lastUpdated of the last entry consumed and AtIDs the ids
// consumed at that instant. The next page is a fresh search from After
// (_lastUpdated=ge…) that skips AtIDs, so no update or deletion made
// meanwhile can shift what is left to read, and an offset cap or a broken
// next link does not matter. Next links are followed only through a page
// whose entries all share one instant; when one of those fails, the search
// goes on by keyset once more (Broke) before it gives up.
type position struct {
	Search int      `json:"s"`
	Page   string   `json:"p,omitempty"`
	Skip   int      `json:"n,omitempty"`
	After  string   `json:"a,omitempty"`
	AtIDs  []string `json:"i,omitempty"`
	Broke  bool     `json:"b,omitempty"`
	// Full: more than maxAtIDs were read at After; AtIDs holds the first
	// (the cursor must fit a Step Functions payload), the page and Skip
	// place the rest, and a failed next link cannot fall back to keyset.
	Full bool `json:"f,omitempty"`
	// Dropped counts the resources of the segment an upstream returned
	// for a compartment search that are in none of the selected patients'
	// compartments; Warned says the count was reported.
	Dropped int  `json:"d,omitempty"`
	Warned  bool `json:"w,omitempty"`
	// Early counts resources returned that were last updated at or before
	// _since (an upstream ignoring _lastUpdated), Unmatched those that do
	// not match the _typeFilter of their search; both are dropped and
	// reported with the warning.
	Early     int `json:"e,omitempty"`
	Unmatched int `json:"u,omitempty"`
	// Cuts split a segment paged by keyset into sub-windows of
	// _lastUpdated, (lo, c1], (c1, c2] … (cn, hi], each read as searches
	// of its own, so their pages are in flight together. They are chosen
	// when the segment's first chunk opens and kept in its cursor, so
	// every chunk reads the same searches.
	Cuts []string `json:"c,omitempty"`
}

// maxAtIDs bounds the ids a cursor keeps of one instant.
const maxAtIDs = 1000

// nextSearch moves to the start of the next search of the segment.
func (p *position) nextSearch() {
	*p = position{Search: p.Search + 1, Dropped: p.Dropped, Warned: p.Warned, Early: p.Early, Unmatched: p.Unmatched, Cuts: p.Cuts}
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
// page, while readahead keeps the pages that follow in flight.
type reader struct {
	src      *Source
	ctx      context.Context
	cancel   context.CancelFunc
	typ      string
	searches []search
	filters  []url.Values // the _typeFilter queries, for dedupe checks
	// checks are the same queries, evaluated here on every resource their
	// search returns (nil: no _typeFilter).
	checks []*typefilter.Filter
	bounds url.Values // the _lastUpdated bounds, for dedupe checks
	// lo and hi are the same bounds (gt lo, le hi; nil: none), checked
	// on every resource.
	lo, hi *time.Time
	comps  []fhir.CompartmentParam
	// batchOf maps every selected patient to its batch (nil: no
	// compartment search), batch is this segment's; anyPatient keeps only
	// resources in some patient's compartment (patient-level export of
	// all patients).
	batchOf    map[string]int
	batch      int
	anyPatient bool
	// sorted: the upstream sorts by _lastUpdated, searches are paged by
	// keyset (see position). atSet mirrors live.AtIDs, afterT live.After.
	sorted   bool
	idSort   bool // _sort=_lastUpdated,_id
	atSet    map[string]bool
	afterT   time.Time
	afterRaw string // the live.After that atSet and afterT reflect
	// Of the open page: entries read, whether any was new, the first
	// resource's lastUpdated.
	pageEntries      int
	pageNew, pageAny bool
	pageFirst        time.Time
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
	ra                  *readahead
	buf                 []item // resources of a later filter, awaiting the dedupe check
	// bad is an unusable entry, reported (at badPos) once the resources
	// before it were returned.
	bad    *export.BadRecordError
	badPos position
	out    []byte
}

func (r *reader) Cursor() string { return r.cur.String() }

func (r *reader) Close() error {
	r.cancel()
	r.closePage()
	r.ra.close()
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
			if (r.live.Dropped > 0 || r.live.Early > 0 || r.live.Unmatched > 0) && !r.live.Warned {
				r.live.Warned = true
				r.cur = r.live
				return nil, r.warning()
			}
			r.cur = r.live
			return nil, io.EOF
		}
		s := r.searches[r.live.Search]
		if s.filter > 0 || r.history {
			if err := r.fillChecked(); err != nil {
				if err := r.failed(err); err != nil {
					return nil, err
				}
			}
			continue
		}
		line, _, err := r.nextEntry()
		if err == io.EOF {
			continue // the search ended; the loop moves on
		}
		if err != nil {
			if err := r.failed(err); err != nil {
				return nil, err
			}
			continue
		}
		if line == nil {
			continue // not wanted
		}
		r.cur = r.live
		return line, nil
	}
}

// warning reports, once per segment, the resources the upstream returned
// that the request did not ask for and that were dropped here.
func (r *reader) warning() error {
	var parts []string
	if r.live.Dropped > 0 {
		parts = append(parts, fmt.Sprintf("%d %s resources that are in none of the selected patients' compartments "+
			"(it seems to ignore a Patient compartment search parameter)", r.live.Dropped, r.typ))
	}
	if r.live.Early > 0 {
		parts = append(parts, fmt.Sprintf("%d %s resources last updated before _since (it seems to ignore _lastUpdated)", r.live.Early, r.typ))
	}
	if r.live.Unmatched > 0 {
		parts = append(parts, fmt.Sprintf("%d %s resources that do not match the _typeFilter of their search (it seems to ignore a parameter)", r.live.Unmatched, r.typ))
	}
	where := "this search"
	if r.batchOf != nil {
		where = fmt.Sprintf("the compartment searches of patient batch %d", r.batch+1)
	}
	return &export.BadRecordError{
		Warning:  true,
		Position: where,
		Reason:   "the upstream FHIR server returned " + strings.Join(parts, " and ") + "; each resource was checked here and these were dropped",
	}
}

// failed turns a read error into the reader's answer. A permanent upstream
// failure of a page (a 4xx answer, broken JSON, a next-link loop) ends that
// search: it is reported as a bad record, so the export goes on with the
// next search and lists the loss in the manifest's error array. Anything
// else (transient failures that outlived the retries, authorization) is
// returned as it is and stops the chunk. Under keyset paging a failed next
// link is first replaced by a search from the last instant read (nil: go
// on).
func (r *reader) failed(err error) error {
	var se *SyntaxError
	var loop *loopError
	if !Permanent(err) && !errors.As(err, &se) && !errors.As(err, &loop) {
		return err
	}
	if r.keyset() && r.live.Page != "" && r.live.After != "" && !r.live.Broke && !r.live.Full {
		r.src.opts.Log.InfoContext(r.ctx, "upstream next link failed; paging on by _lastUpdated", "type", r.typ, "err", err)
		r.closePage()
		r.live.Page, r.live.Skip, r.live.Broke = "", 0, true
		return nil
	}
	s := r.live.Search
	where := fmt.Sprintf("%s search %d of %d", r.typ, s+1, len(r.searches))
	if r.live.Page != "" {
		where += " at " + r.live.Page
	}
	r.closePage()
	r.buf = nil
	r.live.nextSearch()
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
		r.syncKeyset()
		entries, fresh, allAt := r.pageEntries, r.pageNew, !r.afterT.IsZero() && r.pageFirst.Equal(r.afterT)
		r.closePage()
		r.bodyRetries = 0
		if next == "" || (r.keyset() && entries == 0) {
			r.live.nextSearch()
			return nil, "", io.EOF
		}
		if r.keyset() && fresh && !allAt {
			// Page on from the last instant read: a fresh search, which
			// no change made meanwhile can shift.
			r.live.Page, r.live.Skip = "", 0
			return nil, "", nil
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
	r.pageEntries++
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
	if h.ResourceType == r.typ && !r.inBounds(h) {
		return nil, "", nil
	}
	if r.keyset() && h.ResourceType == r.typ && !r.advance(h) {
		return nil, "", nil // consumed before
	}
	return r.keep(line, h), h.ID, nil
}

// syncKeyset makes atSet and afterT reflect live.After and live.AtIDs (a
// new search, or a reader opened at a cursor).
func (r *reader) syncKeyset() {
	if r.atSet != nil && r.live.After == r.afterRaw {
		return
	}
	r.afterRaw = r.live.After
	r.afterT, _ = fhir.ParseLastUpdated(r.live.After)
	r.atSet = map[string]bool{}
	for _, id := range r.live.AtIDs {
		r.atSet[id] = true
	}
}

// inBounds checks a resource against the search's _lastUpdated bounds
// here, whatever the upstream did with them. One last updated after the
// upper bound (a newer version of what a snapshot listed) belongs to the
// next export and must not move the keyset; one at or before _since is
// what an upstream ignoring _lastUpdated returns, dropped and counted.
// A resource without lastUpdated is kept: no bound can place it.
//
// In a sub-window (see position.Cuts), what is outside the window belongs
// to another window's search; the resources at or before _since are
// counted by the first window only, and one without lastUpdated is kept
// by the first window only.
func (r *reader) inBounds(h fhir.Head) bool {
	keep, early := r.inWindow(r.searches[r.live.Search], h.LastUpdated)
	if early {
		r.live.Early++
	}
	return keep
}

// inWindow is inBounds for search s, without counting: early says the
// resource is one to count as at or before _since.
func (r *reader) inWindow(s search, lastUpdated string) (keep, early bool) {
	at, ok := fhir.ParseLastUpdated(lastUpdated)
	switch {
	case !ok:
		return s.window == 0, false
	case r.hi != nil && at.After(*r.hi):
		return false, false
	case r.lo != nil && !at.After(*r.lo):
		return false, s.window == 0
	case s.hi != nil && at.After(*s.hi), s.lo != nil && !at.After(*s.lo):
		return false, false
	}
	return true, false
}

// keyset reports whether searches are paged by keyset (see position).
func (r *reader) keyset() bool { return r.sorted && !r.history }

// advance moves the keyset past an entry of the open page; false when the
// entry was consumed before: at the instant the keyset stands on, or
// earlier (a page reopened from a cursor; a search from the keyset would
// not return it either, as it is sorted).
func (r *reader) advance(h fhir.Head) bool {
	r.syncKeyset()
	at, ok := fhir.ParseLastUpdated(h.LastUpdated)
	if !r.pageAny {
		r.pageAny, r.pageFirst = true, at // zero when unknown
	}
	switch {
	case !ok:
		// Without lastUpdated the keyset cannot place it; no search
		// bounded by _lastUpdated returns it twice either.
	case !r.afterT.IsZero() && at.Equal(r.afterT):
		if r.atSet[h.ID] {
			return false
		}
		r.atSet[h.ID] = true
		if len(r.live.AtIDs) < maxAtIDs {
			r.live.AtIDs = append(r.live.AtIDs, h.ID)
		} else {
			r.live.Full = true
		}
	case r.afterT.IsZero() || at.After(r.afterT):
		r.live.After, r.live.AtIDs, r.live.Broke, r.live.Full = h.LastUpdated, []string{h.ID}, false, false
		r.afterRaw, r.afterT, r.atSet = h.LastUpdated, at, map[string]bool{h.ID: true}
	default:
		return false
	}
	r.pageNew = true
	return true
}

// keep returns line if the segment wants it, else nil.
func (r *reader) keep(line []byte, h fhir.Head) []byte {
	if h.ResourceType != r.typ {
		return nil // an included resource or a search outcome
	}
	s := r.searches[r.live.Search]
	if r.checks != nil && !r.checks[s.filter].Match(line) {
		r.live.Unmatched++
		return nil
	}
	if r.anyPatient && r.typ != "Patient" {
		in := false
		fhir.CompartmentPatients(r.typ, line, func(string) bool { in = true; return false })
		if !in {
			return nil
		}
	}
	if r.batchOf != nil {
		b, c, ok := r.owner(line, h.ID)
		if !ok {
			// The upstream returned what the search did not ask for
			// (another patient's data): never exported, counted.
			r.live.Dropped++
			return nil
		}
		if b != r.batch || c != s.comp {
			return nil // exported by the batch and search that own it
		}
	}
	return line
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

// owner is where a resource of a compartment search is exported, so that
// it is exported exactly once however many patients, batches and
// parameters find it: the first batch holding a selected patient it
// references through the Patient compartment, and in that batch the first
// compartment parameter that references one. ok is false when it
// references none of the selected patients.
func (r *reader) owner(line []byte, id string) (batch, comp int, ok bool) {
	batch = -1
	for j, c := range r.comps {
		if c.Name == "_id" {
			if b, in := r.batchOf[id]; in && (batch < 0 || b < batch) {
				batch, comp = b, j
			}
			continue
		}
		fhir.ReferencedPatients(line, c.Paths, func(pid string) bool {
			if b, in := r.batchOf[pid]; in && (batch < 0 || b < batch) {
				batch, comp = b, j
			}
			return true
		})
	}
	return batch, comp, batch >= 0
}

// openPage requests the current page (or takes the prefetched response) and
// positions the stream after the entries already consumed.
func (r *reader) openPage() error {
	u := r.live.Page
	if u == "" {
		var err error
		if u, err = r.firstURL(r.searches[r.live.Search], r.live.After); err != nil {
			return err
		}
	}
	r.seen[u] = true
	body, err := r.ra.open(r.live.Search, u, keysetState(r.live))
	if err != nil {
		return err
	}
	var hint func(string)
	if !r.keyset() {
		// A page too big to read ahead is streamed: its next link is
		// requested as soon as it is read (under keyset paging the next
		// page is known only at the end).
		stream := r.live.Search
		hint = func(next string) {
			if abs, err := r.src.client.resolve(next); err == nil && !r.seen[abs] {
				r.ra.hint(stream, abs)
			}
		}
	}
	pg, err := newPage(body, hint)
	if err != nil {
		body.Close()
		return err
	}
	r.pg, r.body = pg, body
	r.pageEntries, r.pageNew, r.pageAny, r.pageFirst = 0, false, false, time.Time{}
	if r.live.Page != "" || !r.keyset() {
		r.live.Page = u
	}
	r.skipTo, r.live.Skip = r.live.Skip, 0
	if r.keyset() && r.live.Page == "" {
		r.skipTo = 0 // a search from the keyset: what was consumed is skipped by id
	}
	return nil
}

// firstURL is the GET URL of a search's first page (under keyset paging,
// from after).
func (r *reader) firstURL(s search, after string) (string, error) {
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
		q[k] = slices.Clone(v)
	}
	q.Set("_count", strconv.Itoa(r.src.opts.PageSize))
	if r.keyset() {
		q.Set("_sort", "_lastUpdated")
		if r.idSort {
			q.Set("_sort", "_lastUpdated,_id")
		}
		if after != "" {
			q.Add("_lastUpdated", "ge"+after)
		}
	}
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
	// A check is one of the reader's requests in flight.
	matching := func(bounds, filter url.Values) (found map[string]bool, err error) {
		if serr := r.ra.slot(func() { found, err = r.src.matching(r.ctx, r.typ, ids, bounds, filter) }); serr != nil {
			return nil, serr
		}
		return found, err
	}
	if r.history {
		// A resource deleted and created again is not deleted.
		found, err := matching(nil, nil)
		if err != nil {
			return err
		}
		drop = found
	}
	for f := 0; f < r.searches[search].filter; f++ {
		found, err := matching(r.bounds, r.filters[f])
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

// startReadahead sets up the reader's read-ahead (its context set).
func (r *reader) startReadahead() {
	o := r.src.opts
	r.ra = newReadahead(r.ctx, len(r.searches), o.ReadAheadBytes, o.MaxInFlight, r.src.client.get,
		func(stream int) string {
			u, err := r.firstURL(r.searches[stream], "")
			if err != nil {
				return ""
			}
			return u
		}, r.guessNext)
}

// guessNext is the URL the reader will ask for after a page of stream
// whose whole body is known, given the chain's keyset state before it: the
// same decision nextEntry makes at the end of a page (a keyset search from
// the last instant read, else the next link), taken on the page's entries
// as nextEntry and advance take them. It runs beside the reader and reads
// only what Open set. A wrong guess costs a request: the reader takes a
// page read ahead only by its own URL.
func (r *reader) guessNext(stream int, st chainState, body []byte) (string, chainState) {
	var next string
	gjson.GetBytes(body, "link").ForEach(func(_, l gjson.Result) bool {
		if l.Get("relation").Str == "next" {
			next = l.Get("url").Str
		}
		return true
	})
	if !r.keyset() {
		if next == "" {
			return "", st
		}
		abs, err := r.src.client.resolve(next)
		if err != nil {
			return "", st
		}
		return abs, st
	}
	s := r.searches[stream]
	st = st.clone()
	entries, fresh, seenAny := 0, false, false
	var first time.Time
	gjson.GetBytes(body, "entry").ForEach(func(_, e gjson.Result) bool {
		entries++
		res := e.Get("resource")
		if !res.Exists() {
			return true
		}
		f := gjson.GetMany(res.Raw, "resourceType", "id", "meta.lastUpdated")
		if f[0].Str != r.typ {
			return true
		}
		if keep, _ := r.inWindow(s, f[2].Str); !keep {
			return true
		}
		at, ok := fhir.ParseLastUpdated(f[2].Str)
		if !seenAny {
			seenAny, first = true, at
		}
		switch {
		case !ok:
			fresh = true
		case !st.afterT.IsZero() && at.Equal(st.afterT):
			if !st.at[f[1].Str] {
				st.at[f[1].Str] = true
				fresh = true
			}
		case st.afterT.IsZero() || at.After(st.afterT):
			st.after, st.afterT, st.at = f[2].Str, at, map[string]bool{f[1].Str: true}
			fresh = true
		}
		return true
	})
	if next == "" || entries == 0 {
		return "", st
	}
	if fresh && !(!st.afterT.IsZero() && first.Equal(st.afterT)) {
		u, err := r.firstURL(s, st.after)
		if err != nil {
			return "", st
		}
		return u, st
	}
	abs, err := r.src.client.resolve(next)
	if err != nil {
		return "", st
	}
	return abs, st
}
