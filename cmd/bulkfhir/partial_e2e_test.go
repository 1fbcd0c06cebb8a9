package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// gate holds back an upstream's resource pages of one type until opened,
// so a test can look at an export while it runs, without timing.
type gate struct {
	typ, count string
	open       chan struct{}
	once       sync.Once
	held       chan struct{} // closed when the first request waits
	heldOnce   sync.Once
}

func newGate(typ, count string) *gate {
	return &gate{typ: typ, count: count, open: make(chan struct{}), held: make(chan struct{})}
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// gatedUpstream is a FHIR server over the test data whose Patient pages
// (searches of --source-page-size 40) wait for the gate.
func gatedUpstream(t *testing.T) (*gate, *httptest.Server) {
	t.Helper()
	g := newGate("Patient", "40")
	fs := fhirtest.New(fhirtest.Options{MaxCount: 50})
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(g.wrap(fs))
	t.Cleanup(up.Close)
	t.Cleanup(g.release)
	return g, up
}

func (g *gate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/"+g.typ) && r.URL.Query().Get("_count") == g.count {
			g.heldOnce.Do(func() { close(g.held) })
			select {
			case <-g.open:
			case <-r.Context().Done():
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// page is one manifest page as a test sees it.
type page struct {
	status int
	m      manifest
	files  []string // output, error and deleted items as "kind path count size"
}

// fileID names a manifest item by its URL without the query (links are
// signed afresh on every request) and its count and size.
func fileID(kind, u string, count, size *int64) string {
	p, _ := url.Parse(u)
	return fmt.Sprintf("%s %s %d %d", kind, p.Path, deref(count), deref(size))
}

func deref(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

func getPage(t *testing.T, u string) page {
	t.Helper()
	r := do(t, http.MethodGet, u, http.Header{"Accept": {"application/json"}}, "")
	p := page{status: r.status}
	if r.status != http.StatusOK && r.status != http.StatusAccepted {
		t.Fatalf("GET %s = %d: %s", u, r.status, r.body)
	}
	if len(r.body) == 0 {
		return p
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("page Content-Type = %q", ct)
	}
	if err := json.Unmarshal(r.body, &p.m); err != nil {
		t.Fatalf("page %s: %v: %s", u, err, r.body)
	}
	for _, o := range p.m.Output {
		p.files = append(p.files, fileID("output", o.URL, o.Count, o.FileSize))
	}
	for _, o := range p.m.Error {
		p.files = append(p.files, fileID("error", o.URL, o.Count, o.FileSize))
	}
	for _, o := range p.m.Deleted {
		p.files = append(p.files, fileID("deleted", o.URL, o.Count, o.FileSize))
	}
	return p
}

// itemsOf lists each page's items, for exporttest.ComparePages.
func itemsOf(pages []page) [][]string {
	out := make([][]string, len(pages))
	for i, p := range pages {
		out[i] = p.files
	}
	return out
}

// walk follows next links from the status URL and returns the pages.
func walk(t *testing.T, statusURL string) []page {
	t.Helper()
	var pages []page
	seen := map[string]bool{}
	for u := statusURL; u != ""; {
		if seen[u] {
			t.Fatalf("next link loops back to %s", u)
		}
		seen[u] = true
		p := getPage(t, u)
		pages = append(pages, p)
		u = p.m.Next()
	}
	return pages
}

// TestPartialManifests: with allowPartialManifests=true a running export's
// status carries the files done so far in pages of at most
// --manifest-page-size items chained by next links; pages never change once
// returned; at completion the pages together are exactly the unpaged
// manifest, each file once.
func TestPartialManifests(t *testing.T) {
	g, up := gatedUpstream(t)
	const pageSize = 2
	s := startServer(t, "", "--source-url", up.URL, "--source-page-size", "40",
		"--manifest-page-size", fmt.Sprint(pageSize), "--unit-workers", "2")
	src := sourceResources(t, dataDir)

	loc := kickoff(t, http.MethodGet, s.base+"/$export?allowPartialManifests=true&_maximumFileSize=1048576", kickHeaders(), "")
	<-g.held
	// The Patient unit is held, so the types before it finish and their
	// pages appear while the job runs.
	var running []page
	var first page
	if !waitfor.Condition(2*time.Minute, 50*time.Millisecond, func() bool {
		first = getPage(t, loc)
		if first.status != http.StatusAccepted {
			t.Fatalf("status %d while the Patient pages are held", first.status)
		}
		if len(first.files) == 0 {
			return false
		}
		running = walk(t, loc)
		return running[len(running)-1].m.Next() == "" && len(running) >= 2
	}) {
		t.Fatalf("no partial manifest of two pages while the export ran: %+v", first)
	}
	for i, p := range running {
		if p.status != http.StatusAccepted {
			t.Errorf("running page %d: status %d, want 202", i, p.status)
		}
		if len(p.files) == 0 || len(p.files) > pageSize {
			t.Errorf("running page %d has %d items, want 1..%d", i, len(p.files), pageSize)
		}
		if p.m.TransactionTime != running[0].m.TransactionTime || p.m.Request != running[0].m.Request {
			t.Errorf("page %d fields differ from the first page's", i)
		}
		for _, o := range p.m.Output {
			if o.Type >= "Patient" {
				t.Errorf("running page %d lists a %s file while Patient is held", i, o.Type)
			}
		}
	}
	// Polled again, the pages are the same.
	again := walk(t, loc)
	for i := range running {
		if strings.Join(again[i].files, "|") != strings.Join(running[i].files, "|") {
			t.Errorf("running page %d changed between polls:\n%v\n%v", i, running[i].files, again[i].files)
		}
	}

	g.release()
	waitDone(t, loc, nil)
	pages := walk(t, loc)
	var union manifest
	for i, p := range pages {
		if p.status != http.StatusOK {
			t.Errorf("complete page %d: status %d", i, p.status)
		}
		union.Output = append(union.Output, p.m.Output...)
	}
	exporttest.ComparePages(t, itemsOf(running), itemsOf(pages), pageSize)
	t.Logf("%d pages while running, %d at completion", len(running), len(pages))
	sameSet(t, download(t, union), src)
	// The client's status follows the pages too.
	cl, err := bulkclient.New(bulkclient.Options{Server: s.base}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cl.Status(context.Background(), loc)
	if err != nil || st.Manifest == nil || len(st.Manifest.Output) != len(union.Output) || len(st.Manifest.Link) != 0 {
		t.Errorf("client status = %+v, %v; want the %d files of every page, no links", st, err, len(union.Output))
	}

	// The same export unpaged lists the same files (paths differ by job).
	plainLoc := kickoff(t, http.MethodGet, s.base+"/$export?_maximumFileSize=1048576", kickHeaders(), "")
	plain := waitManifest(t, plainLoc, nil)
	var a, b []string
	for _, o := range plain.Output {
		a = append(a, fmt.Sprintf("%s %d %d", o.Type, deref(o.Count), deref(o.FileSize)))
	}
	for _, o := range union.Output {
		b = append(b, fmt.Sprintf("%s %d %d", o.Type, deref(o.Count), deref(o.FileSize)))
	}
	sort.Strings(a)
	sort.Strings(b)
	if strings.Join(a, "|") != strings.Join(b, "|") {
		t.Errorf("paged files differ from the unpaged manifest:\n%v\n%v", b, a)
	}
	if len(plain.Link) != 0 {
		t.Errorf("an unpaged manifest has links: %v", plain.Link)
	}
	// A page cursor on an export that did not ask for pages is refused.
	requireOutcome(t, do(t, http.MethodGet, plainLoc+"?page=x", nil, ""), 400, "page")
}

// doneRecorder records the files a client finished, and signals the
// first one.
type doneRecorder struct {
	*bulkclient.LineReporter
	mu    sync.Mutex
	done  map[string]int
	first chan struct{}
	once  sync.Once
}

func (r *doneRecorder) FileDone(name string, lines, bytes int64, skipped bool) {
	r.mu.Lock()
	r.done[name]++
	r.mu.Unlock()
	r.once.Do(func() { close(r.first) })
}

// TestClientFollowsPartialManifests: bulkfhir's client with
// PartialManifests downloads files while the export still runs (the
// Patient pages are held upstream), follows the pages to the end and
// fetches every file once.
func TestClientFollowsPartialManifests(t *testing.T) {
	g, up := gatedUpstream(t)
	s := startServer(t, "", "--source-url", up.URL, "--source-page-size", "40", "--manifest-page-size", "3", "--max-file-bytes", "200000")
	src := sourceResources(t, dataDir)

	rep := &doneRecorder{LineReporter: &bulkclient.LineReporter{W: io.Discard}, done: map[string]int{}, first: make(chan struct{})}
	out := t.TempDir()
	c, err := bulkclient.New(bulkclient.Options{Server: s.base, OutDir: out, PartialManifests: true, MaxWait: time.Second}, nil, rep)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		sum *bulkclient.Summary
		err error
	}
	res := make(chan result, 1)
	go func() { sum, err := c.Run(context.Background()); res <- result{sum, err} }()
	select {
	case <-rep.first:
	case r := <-res:
		t.Fatalf("the client finished (%v) before the held export could", r.err)
	case <-time.After(2 * time.Minute):
		t.Fatal("no file was downloaded while the export ran")
	}
	g.release()
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	sameSet(t, sourceResources(t, out), src)
	if r.sum.Resources != int64(len(src)) {
		t.Errorf("summary counts %d resources, want %d", r.sum.Resources, len(src))
	}
	for name, n := range rep.done {
		if n != 1 {
			t.Errorf("%s downloaded %d times", name, n)
		}
	}
	if len(rep.done) != r.sum.Files {
		t.Errorf("%d files downloaded, summary says %d", len(rep.done), r.sum.Files)
	}
}
