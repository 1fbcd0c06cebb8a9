package fhirsource

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// readahead keeps several pages of one segment in flight. The segment's
// searches are independent streams, read by the reader one after the
// other; each stream is a chain of pages, requested in order, the next as
// soon as the previous body has arrived (its next link, or under keyset
// paging its last entry, is then known). Bodies are held in memory under a
// byte budget; a page that does not fit is handed over as a stream (what
// was read of it, then the rest of the response), as the reader would read
// it itself.
//
// Nothing here decides what is exported: the reader asks for each page by
// the URL it computes, and takes a page read ahead only when the URLs are
// equal. A guess that turns out wrong costs a request, never data; what
// was read ahead is dropped on Close.
type readahead struct {
	ctx context.Context
	get func(ctx context.Context, u string) (*http.Response, error)
	// predict returns the URL of the page after a whole body of stream
	// ("" for none or unknown) and the chain's keyset state after it.
	predict func(stream int, st chainState, body []byte) (string, chainState)
	// first is the URL of a stream's first page, read from its start.
	first     func(stream int) string
	budget    int64
	maxFlight int

	mu   sync.Mutex
	cond *sync.Cond
	// cur is the stream the reader is on; started: the streams after the
	// first one opened have their chains.
	cur     int
	started bool
	closed  bool
	pages   map[string]*fetched
	chains  []chain
	// used is the memory the buffered bodies hold; inflight the requests
	// under way; waiting the reader's own requests waiting for a slot.
	used, peakUsed       int64
	inflight, peakFlight int
	waiting              int
	wg                   sync.WaitGroup
}

// chain is where one stream's read-ahead stands.
type chain struct {
	next  string // the page to request next ("" none known)
	state chainState
	// gen counts resets (the reader asked for a page the chain did not
	// guess): a fetch of an older generation no longer extends the chain.
	gen int
}

// chainState is what the keyset guess of a chain's next page needs: the
// last instant read and the ids read at it.
type chainState struct {
	after  string
	afterT time.Time
	at     map[string]bool
}

// fetched is one page requested ahead.
type fetched struct {
	url         string
	stream, gen int
	done        chan struct{}
	body        []byte
	resp        *http.Response // not nil: body is its start, the rest is still to read
	err         error
	held        int64 // budget held by body
	drop        bool
}

func newReadahead(ctx context.Context, streams int, budget int64, maxFlight int,
	get func(context.Context, string) (*http.Response, error),
	first func(int) string, predict func(int, chainState, []byte) (string, chainState)) *readahead {
	ra := &readahead{ctx: ctx, get: get, first: first, predict: predict, budget: budget, maxFlight: max(maxFlight, 1),
		pages: map[string]*fetched{}, chains: make([]chain, streams)}
	ra.cond = sync.NewCond(&ra.mu)
	return ra
}

// open returns the body of page u of stream, which the reader is now on,
// and keeps the pages after it in flight. st is the reader's keyset state
// before the page.
func (ra *readahead) open(stream int, u string, st chainState) (io.ReadCloser, error) {
	ra.mu.Lock()
	if ra.closed {
		ra.mu.Unlock()
		return nil, context.Canceled
	}
	if stream != ra.cur || !ra.started {
		ra.cur = stream
		for _, f := range ra.pages {
			if f.stream < stream {
				ra.dropLocked(f)
			}
		}
	}
	if !ra.started {
		ra.started = true
		for j := stream + 1; j < len(ra.chains); j++ {
			ra.chains[j].next = ra.first(j)
		}
	}
	f := ra.pages[u]
	if f == nil || f.stream != stream || f.drop {
		// Not guessed: what the chain read ahead followed another path.
		for _, g := range ra.pages {
			if g.stream == stream {
				ra.dropLocked(g)
			}
		}
		c := &ra.chains[stream]
		c.gen++
		c.next, c.state = "", st
		if err := ra.slotLocked(); err != nil {
			ra.mu.Unlock()
			return nil, err
		}
		f = ra.launchLocked(u, stream)
	}
	delete(ra.pages, u)
	ra.pumpLocked()
	ra.mu.Unlock()

	<-f.done // its request ends with the reader's context at the latest
	if f.err != nil {
		ra.release(f)
		return nil, f.err
	}
	return &pageBody{ra: ra, f: f, r: bytes.NewReader(f.body)}, nil
}

// hint names the next page of stream, read from a page being streamed.
func (ra *readahead) hint(stream int, u string) {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	if ra.closed || stream != ra.cur || ra.pages[u] != nil {
		return
	}
	if c := &ra.chains[stream]; c.next == "" {
		c.next = u
		ra.pumpLocked()
	}
}

// slot runs fn as one of the requests in flight (a dedupe check).
func (ra *readahead) slot(fn func()) error {
	ra.mu.Lock()
	if err := ra.slotLocked(); err != nil {
		ra.mu.Unlock()
		return err
	}
	ra.mu.Unlock()
	defer func() {
		ra.mu.Lock()
		ra.inflight--
		ra.pumpLocked()
		ra.cond.Broadcast()
		ra.mu.Unlock()
	}()
	fn()
	return nil
}

// slotLocked waits for a free request slot for the reader and takes it;
// read-ahead starts no request meanwhile.
func (ra *readahead) slotLocked() error {
	ra.waiting++
	for ra.inflight >= ra.maxFlight && !ra.closed {
		ra.cond.Wait()
	}
	ra.waiting--
	if ra.closed {
		return context.Canceled
	}
	ra.inflight++
	ra.peakFlight = max(ra.peakFlight, ra.inflight)
	return nil
}

// pumpLocked starts requests while slots are free: the pages the chains
// know of, the reader's stream first, later streams while the budget has
// room.
func (ra *readahead) pumpLocked() {
	for !ra.closed && ra.waiting == 0 && ra.inflight < ra.maxFlight {
		// At most 2×maxFlight streams ahead: what a chunk stopped early
		// drops stays small.
		j := ra.cur
		for ; j < len(ra.chains) && j <= ra.cur+2*ra.maxFlight; j++ {
			if ra.chains[j].next != "" && (j == ra.cur || ra.used < ra.budget) {
				break
			}
		}
		if j >= len(ra.chains) || j > ra.cur+2*ra.maxFlight {
			return
		}
		u := ra.chains[j].next
		ra.chains[j].next = ""
		if ra.pages[u] != nil {
			continue
		}
		ra.inflight++
		ra.peakFlight = max(ra.peakFlight, ra.inflight)
		ra.pages[u] = ra.launchLocked(u, j)
	}
}

// launchLocked starts the request for u; the caller holds a slot for it.
func (ra *readahead) launchLocked(u string, stream int) *fetched {
	f := &fetched{url: u, stream: stream, gen: ra.chains[stream].gen, done: make(chan struct{})}
	ra.wg.Add(1)
	go ra.fetch(f)
	return f
}

// readStep is how much of a body is read (and budgeted) at a time.
const readStep = 64 << 10

func (ra *readahead) fetch(f *fetched) {
	defer ra.wg.Done()
	resp, err := ra.get(ra.ctx, f.url)
	var buf bytes.Buffer
	whole := false
	if err == nil {
		for {
			ra.mu.Lock()
			grant := min(ra.budget-ra.used, readStep)
			if grant > 0 {
				ra.used += grant
			}
			ra.mu.Unlock()
			if grant <= 0 {
				f.resp = resp // too big for the budget: streamed
				break
			}
			n, rerr := io.CopyN(&buf, resp.Body, grant)
			ra.mu.Lock()
			ra.used -= grant - n
			f.held += n
			ra.peakUsed = max(ra.peakUsed, ra.used)
			ra.mu.Unlock()
			if rerr != nil {
				// The end, or a body cut short, which the reader
				// finds when it reads the page and reads again.
				resp.Body.Close()
				whole = true
				break
			}
		}
	}
	f.body, f.err = buf.Bytes(), err
	ra.mu.Lock()
	c := ra.chains[f.stream]
	ra.mu.Unlock()
	var next string
	var st chainState
	if whole && !errors.Is(err, context.Canceled) {
		next, st = ra.predict(f.stream, c.state, f.body)
	}
	ra.mu.Lock()
	ra.inflight--
	if c := &ra.chains[f.stream]; whole && c.gen == f.gen && !f.drop && !ra.closed {
		c.state = st
		if next != "" && ra.pages[next] == nil {
			c.next = next
		}
	}
	close(f.done)
	if f.drop {
		ra.freeLocked(f)
	}
	ra.pumpLocked()
	ra.cond.Broadcast()
	ra.mu.Unlock()
}

// dropLocked forgets a page read ahead that the reader will not take.
func (ra *readahead) dropLocked(f *fetched) {
	delete(ra.pages, f.url)
	f.drop = true
	select {
	case <-f.done:
		ra.freeLocked(f)
	default: // freed when its fetch ends
	}
}

func (ra *readahead) freeLocked(f *fetched) {
	ra.used -= f.held
	f.held, f.body = 0, nil
	if f.resp != nil {
		f.resp.Body.Close()
		f.resp = nil
	}
}

// release returns a taken page's memory to the budget.
func (ra *readahead) release(f *fetched) {
	ra.mu.Lock()
	ra.freeLocked(f)
	ra.pumpLocked()
	ra.mu.Unlock()
}

// close stops every request and drops what was read ahead.
func (ra *readahead) close() {
	ra.mu.Lock()
	ra.closed = true
	for _, f := range ra.pages {
		ra.dropLocked(f)
	}
	ra.cond.Broadcast()
	ra.mu.Unlock()
	ra.wg.Wait() // the requests see the reader's context cancelled
}

// stats reports the most memory bodies held at once and the most
// requests in flight at once.
func (ra *readahead) stats() (peakBytes int64, peakFlight int) {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	return ra.peakUsed, ra.peakFlight
}

// pageBody is a taken page: its buffered bytes, then the rest of the
// response when it was too big to buffer.
type pageBody struct {
	ra     *readahead
	f      *fetched
	r      *bytes.Reader
	closed bool
}

func (b *pageBody) Read(p []byte) (int, error) {
	if b.r.Len() > 0 || b.f.resp == nil {
		return b.r.Read(p)
	}
	return b.f.resp.Body.Read(p)
}

func (b *pageBody) Close() error {
	if !b.closed {
		b.closed = true
		b.ra.release(b.f)
	}
	return nil
}

// keysetState builds a chain's state from a reader position.
func keysetState(p position) chainState {
	st := chainState{after: p.After, at: make(map[string]bool, len(p.AtIDs))}
	st.afterT, _ = fhir.ParseLastUpdated(p.After)
	for _, id := range p.AtIDs {
		st.at[id] = true
	}
	return st
}

func (st chainState) clone() chainState {
	st.at = maps.Clone(st.at)
	if st.at == nil {
		st.at = map[string]bool{}
	}
	return st
}
