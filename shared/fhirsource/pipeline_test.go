package fhirsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// TestNextSearchIsPrefetched: a patient batch's unit runs one search per
// compartment parameter (Observation: subject, then performer); the next
// search's first page is requested while the current one is still being
// read, and the export is what it is without the overlap.
func TestNextSearchIsPrefetched(t *testing.T) {
	d := sample(t)
	performer := make(chan struct{}, 16)
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if strings.HasPrefix(r.URL.Path, "/Observation") && r.URL.Query().Has("performer") {
			performer <- struct{}{}
		}
		return nil
	}})
	patients := exporttest.GroupMembers(t, d.src, "small-cohort")
	var two []string
	for p := range patients {
		if len(two) < 2 {
			two = append(two, p)
		}
	}
	want := ofTypes(exporttest.ExpectedCompartment(d.src, map[string]bool{two[0]: true, two[1]: true}), "Observation")
	if len(want) < 2 {
		t.Fatalf("%d Observations in the batch, too few to test with", len(want))
	}
	q := export.Query{Level: bulkdata.LevelPatient, Patients: two, Until: &until}
	s := newSource(t, hs.URL, func(o *Options) { o.PageSize = 1000 })
	ctx := context.Background()
	segs, err := s.Plan(ctx, q, "Observation")
	if err != nil || len(segs) != 1 {
		t.Fatalf("plan = %v, %v", segs, err)
	}
	r, err := s.Open(ctx, q, "Observation", segs[0], "")
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	err = export.EachResource(r, func([]byte) bool {
		if got++; got == 1 {
			// The first subject result is out and the subject search has
			// more: the performer search must already be under way.
			select {
			case <-performer:
			case <-time.After(10 * time.Second):
				t.Error("the performer search was not requested while the subject search was read")
			}
		}
		return true
	})
	if err != nil || got != len(want) {
		t.Errorf("read %d Observations (%v), want %d", got, err, len(want))
	}
}

// readLines reads every segment of a type in order, reopening the reader
// from its cursor after every stopEvery resources (0: never) and calling
// mid (when not nil) once after the first chunk. It returns the lines in
// the order read, the bad records and the warnings (BadRecordError.Warning)
// in order, and every cursor a chunk ended with.
func readLines(t *testing.T, s *Source, q export.Query, typ string, stopEvery int, mid func()) (lines, bad, warnings, cursors []string) {
	t.Helper()
	ctx := context.Background()
	segs, err := s.Plan(ctx, q, typ)
	if err != nil {
		t.Fatalf("plan %s: %v", typ, err)
	}
	for _, seg := range segs {
		cursor := ""
		for done := false; !done; {
			r, err := s.Open(ctx, q, typ, seg, cursor)
			if err != nil {
				t.Fatalf("open %s %q: %v", typ, seg, err)
			}
			for n := 0; stopEvery == 0 || n < stopEvery; {
				line, err := r.Next()
				var br *export.BadRecordError
				if errors.As(err, &br) {
					if br.Warning {
						warnings = append(warnings, br.Error())
					} else {
						bad = append(bad, br.Error())
					}
					continue
				}
				if err == io.EOF {
					done = true
					break
				}
				if err != nil {
					r.Close()
					t.Fatalf("read %s: %v", typ, err)
				}
				lines = append(lines, string(line))
				n++
			}
			cursor = r.Cursor()
			cursors = append(cursors, cursor)
			r.Close()
			if mid != nil {
				mid()
				mid = nil
			}
		}
	}
	return lines, bad, warnings, cursors
}

// serial reads one page at a time: one request in flight, no sub-windows.
func serial(o *Options) { o.MaxInFlight, o.KeysetWindows = 1, 1 }

// TestReadAheadExportsWhatOnePageAtATimeDoes: with pages in flight (sub-
// windows, later searches read ahead), every export is byte for byte and
// in order what reading one page at a time gives: whole, resumed from
// cursors taken mid-stream, and with the upstream changing between chunks.
// From an upstream that cannot sort, the sub-windows come one after the
// other, so the lines are the same but not in the same order; under
// changes each read is checked by the oracle of changes (the upstream
// pages a snapshot, which the sub-windows take later).
func TestReadAheadExportsWhatOnePageAtATimeDoes(t *testing.T) {
	d := sample(t)
	since := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	members := exporttest.GroupMembers(t, d.src, "care-team-a")
	cases := []struct {
		name  string
		opts  fhirtest.Options
		q     export.Query
		types []string
		want  map[string][]byte // nil: the content is checked by other tests
		// unordered: the upstream cannot sort; countsDiffer: the warning's
		// counts differ (one page at a time counts a resource the
		// upstream returns again on every keyset search); snapshot: the
		// search goes on by next links, which page a snapshot the
		// sub-windows take at other times, so under changes each read is
		// checked by the oracle of changes instead.
		unordered, countsDiffer, snapshot bool
	}{
		{"keyset", fhirtest.Options{}, export.Query{Level: bulkdata.LevelSystem}, []string{"Observation", "Patient"},
			ofTypes(d.src, "Observation", "Patient"), false, false, false},
		{"keyset since", fhirtest.Options{}, export.Query{Level: bulkdata.LevelSystem, Since: &since}, []string{"Observation"}, nil, false, false, false},
		{"next links", fhirtest.Options{NoSort: true}, export.Query{Level: bulkdata.LevelSystem}, []string{"Observation", "Encounter"},
			ofTypes(d.src, "Observation", "Encounter"), true, false, false},
		{"links after entries", fhirtest.Options{LinksLast: true, AbsoluteLinks: true}, export.Query{Level: bulkdata.LevelSystem}, []string{"Observation"}, nil, false, false, false},
		{"group", fhirtest.Options{}, export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a"}, []string{"Observation", "Encounter", "Patient"},
			ofTypes(exporttest.ExpectedCompartment(d.src, members), "Observation", "Encounter", "Patient"), false, false, false},
		{"group, no sort", fhirtest.Options{NoSort: true}, export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a"}, []string{"Observation"},
			ofTypes(exporttest.ExpectedCompartment(d.src, members), "Observation"), true, false, false},
		{"typeFilter", fhirtest.Options{}, export.Query{Level: bulkdata.LevelSystem,
			TypeFilters: []string{"category=laboratory", "category=vital-signs&status=final"}}, []string{"Observation"}, nil, false, false, false},
		// Every keyset search of an upstream ignoring _lastUpdated starts
		// over: a smaller type keeps the test quick.
		{"ignores _lastUpdated", fhirtest.Options{IgnoreLastUpdated: true}, export.Query{Level: bulkdata.LevelSystem, Since: &since}, []string{"Encounter"},
			where(ofTypes(d.src, "Encounter"), func(l []byte) bool {
				lu, _ := fhir.ParseLastUpdated(gjson.GetBytes(l, "meta.lastUpdated").Str)
				return lu.After(since)
			}), false, true, true},
		{"ignores compartment", fhirtest.Options{IgnoreCompartment: true}, export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a"}, []string{"Encounter"}, nil, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// run reads the types from a fresh upstream, changing it after
			// each type's first chunk when changing is set.
			run := func(mod func(*Options), stop int, changing bool) (lines, bad []string, windowed bool, c *changes) {
				fs, hs := upstream(t, tc.opts)
				s := newSource(t, hs.URL, mod)
				p, err := s.Probe(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				q := tc.q
				q.Until, q.Upstream = &p.Now, p.State
				c = &changes{fs: fs, src: d.src, updated: map[string][]byte{}, deleted: map[string]bool{}}
				// As the export steps do: Plan every type, then read.
				for _, typ := range append([]string{"Patient"}, tc.types...) {
					if _, err := s.Plan(context.Background(), q, typ); err != nil {
						t.Fatal(err)
					}
				}
				for _, typ := range tc.types {
					var mid func()
					if changing {
						mid = func() { c.change(t, typ) }
					}
					l, b, w, cursors := readLines(t, s, q, typ, stop, mid)
					lines, bad = append(lines, l...), append(append(bad, b...), w...)
					for _, cur := range cursors {
						windowed = windowed || strings.Contains(cur, `"c":[`)
					}
				}
				if tc.unordered {
					slices.Sort(lines)
				}
				if tc.countsDiffer {
					for i, b := range bad {
						bad[i] = digits.ReplaceAllString(b, "N")
					}
				}
				return lines, bad, windowed, c
			}
			one, oneBad, oneWin, _ := run(serial, 0, false)
			if len(one) == 0 {
				t.Fatal("nothing exported: the case tests nothing")
			}
			if oneWin {
				t.Fatal("one page at a time read sub-windows")
			}
			keyed := func(lines []string) map[string][]byte {
				got := map[string][]byte{}
				for _, l := range lines {
					h, _ := fhir.Peek([]byte(l))
					got[h.ResourceType+"/"+h.ID] = []byte(l)
				}
				return got
			}
			if tc.want != nil {
				exporttest.SameSet(t, keyed(one), tc.want)
			}
			// Chunks of 61 stop mid-page (pages of 7).
			for _, stop := range []int{0, 61} {
				lines, bad, win, _ := run(nil, stop, false)
				if !win {
					t.Errorf("stop=%d: no sub-windows were read (cursors carry no cuts)", stop)
				}
				same(t, fmt.Sprintf("stop=%d", stop), lines, bad, one, oneBad)
			}
			// Changes made between chunks: both see the same upstream at
			// the same points.
			oneCh, oneChBad, _, c1 := run(serial, 61, true)
			lines, bad, _, c2 := run(nil, 61, true)
			if !tc.unordered && !tc.snapshot {
				same(t, "changing", lines, bad, oneCh, oneChBad)
				return
			}
			c1.check(t, keyed(oneCh), tc.want, false)
			c2.check(t, keyed(lines), tc.want, false)
		})
	}
}

var digits = regexp.MustCompile(`[0-9]+`)

// same fails unless two reads returned the same lines and errors in the
// same order.
func same(t *testing.T, what string, lines, bad, want, wantBad []string) {
	t.Helper()
	if len(lines) != len(want) {
		t.Errorf("%s: %d lines, want %d", what, len(lines), len(want))
	}
	for i := range min(len(lines), len(want)) {
		if lines[i] != want[i] {
			t.Errorf("%s: line %d differs:\n got %.200s\nwant %.200s", what, i, lines[i], want[i])
			break
		}
	}
	if strings.Join(bad, "\n") != strings.Join(wantBad, "\n") {
		t.Errorf("%s: errors and warnings %q, want %q", what, bad, wantBad)
	}
}

// inFlight wraps a test upstream and counts the search pages (of 7, the
// tests' page size) it serves at once, not the probes. The first page
// is held until a second one arrives (or a while passes), so overlap does
// not depend on timing.
type inFlight struct {
	next                      http.Handler
	mu                        sync.Mutex
	now, peak, pages          int
	first                     chan struct{}
	firstTaken, firstReleased bool
}

func (f *inFlight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page := q.Get("_count") == "7" && q.Get("_elements") == "" && r.Method == http.MethodGet
	if !page {
		f.next.ServeHTTP(w, r)
		return
	}
	f.mu.Lock()
	f.now++
	f.pages++
	f.peak = max(f.peak, f.now)
	hold := !f.firstTaken
	f.firstTaken = true
	if f.now >= 2 && !f.firstReleased {
		f.firstReleased = true
		close(f.first)
	}
	f.mu.Unlock()
	if hold {
		select {
		case <-f.first:
		case <-time.After(2 * time.Second): // one request at a time
		}
	}
	f.next.ServeHTTP(w, r)
	f.mu.Lock()
	f.now--
	f.mu.Unlock()
}

// TestPagesAreInFlightTogether counts the pages the upstream serves at
// once: at least two with the default cap, exactly one with MaxInFlight 1
// (the negative control: the count can fail).
func TestPagesAreInFlightTogether(t *testing.T) {
	d := sample(t)
	cases := []struct {
		name string
		opts fhirtest.Options
		q    export.Query
		typ  string
	}{
		{"keyset", fhirtest.Options{}, export.Query{Level: bulkdata.LevelSystem}, "Observation"},
		{"next links", fhirtest.Options{NoSort: true}, export.Query{Level: bulkdata.LevelSystem}, "Observation"},
		{"group", fhirtest.Options{}, export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a"}, "Observation"},
		{"typeFilter", fhirtest.Options{}, export.Query{Level: bulkdata.LevelSystem, TypeFilters: []string{"category=laboratory", "status=final"}}, "Observation"},
	}
	for _, tc := range cases {
		for _, limit := range []int{4, 1} {
			t.Run(fmt.Sprintf("%s/cap=%d", tc.name, limit), func(t *testing.T) {
				fs := fhirtest.New(tc.opts)
				if err := fs.LoadDir(d.dir); err != nil {
					t.Fatal(err)
				}
				counter := &inFlight{next: fs, first: make(chan struct{})}
				hs := httptest.NewServer(counter)
				t.Cleanup(hs.Close)
				s := newSource(t, hs.URL, func(o *Options) { o.MaxInFlight = limit })
				q := probed(t, s, tc.q)
				q.Until = &until
				if _, err := s.Plan(context.Background(), q, "Patient"); err != nil {
					t.Fatal(err) // as the export steps do, before the types are read
				}
				got, bad := readType(t, s, q, tc.typ, 0)
				if len(got) == 0 || len(bad) > 0 {
					t.Fatalf("read %d (%v)", len(got), bad)
				}
				counter.mu.Lock()
				peak, pages := counter.peak, counter.pages
				counter.mu.Unlock()
				if pages < 4 {
					t.Fatalf("%d pages: too few to overlap", pages)
				}
				if limit == 1 && peak != 1 {
					t.Fatalf("%d pages in flight at once with MaxInFlight 1", peak)
				}
				if limit > 1 && (peak < 2 || peak > limit) {
					t.Fatalf("%d pages in flight at once, want 2 to %d", peak, limit)
				}
			})
		}
	}
}

// TestReadAheadStaysWithinItsBudget: pages bigger than the budget are
// streamed, the bodies held never exceed it, and the export is whole. The
// negative control: with a budget that fits the pages, more is held.
func TestReadAheadStaysWithinItsBudget(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{})
	big := strings.Repeat("x", 1<<20)
	const docs = 12
	for i := range docs {
		doc := fmt.Sprintf(`{"resourceType":"DocumentReference","id":"doc%02d","meta":{"lastUpdated":"2024-01-%02dT00:00:00.000Z"},"content":[{"attachment":{"data":%q}}]}`, i, i+1, big)
		if err := fs.Add([]byte(doc)); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(fs)
	t.Cleanup(hs.Close)
	for _, tc := range []struct {
		budget   int64
		overflow bool // more than 1 MiB held at once
	}{{1 << 20, false}, {64 << 20, true}} {
		t.Run(fmt.Sprint("budget=", tc.budget), func(t *testing.T) {
			s := newSource(t, hs.URL, func(o *Options) { o.PageSize, o.ReadAheadBytes = 2, tc.budget })
			q := probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until})
			if segs, err := s.Plan(context.Background(), q, "DocumentReference"); err != nil || len(segs) != 1 || segs[0] != "" {
				t.Fatalf("plan = %v, %v", segs, err) // Plan's count tells Open to read sub-windows
			}
			r, err := s.Open(context.Background(), q, "DocumentReference", "", "")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			n := 0
			err = export.EachResource(r, func(line []byte) bool {
				if !strings.Contains(string(line), big) {
					t.Error("a document lost its data")
				}
				n++
				return true
			})
			if err != nil || n != docs {
				t.Fatalf("read %d of %d (%v)", n, docs, err)
			}
			peak, flight := r.(*reader).ra.stats()
			if !strings.Contains(r.Cursor(), `"c":[`) || flight < 2 {
				t.Fatalf("cursor %s, %d in flight: the pages were not read ahead", r.Cursor(), flight)
			}
			if peak > tc.budget {
				t.Fatalf("%d bytes held, over the budget of %d", peak, tc.budget)
			}
			if (peak > 1<<20) != tc.overflow {
				t.Fatalf("%d bytes held at most; want more than 1 MiB: %v", peak, tc.overflow)
			}
		})
	}
}

// TestA429HoldsEveryRequest: when the upstream refuses one request with
// 429 and Retry-After, the source's other requests (pages in flight side
// by side) wait too, not only the refused one's retry.
func TestA429HoldsEveryRequest(t *testing.T) {
	var mu sync.Mutex
	var refusedAt, otherAt time.Time
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Query().Get("status") {
		case "refused":
			if refusedAt.IsZero() {
				refusedAt = time.Now()
				return &fhirtest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "1"}
			}
		case "other":
			otherAt = time.Now()
		}
		return nil
	}})
	s := newSource(t, hs.URL, nil)
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		resp, err := s.client.get(ctx, hs.URL+"/Observation?status=refused")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	// Wait until the refusal is known, then ask for something else.
	for deadline := time.Now().Add(10 * time.Second); s.client.hold.Load() == 0; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatal("no hold after a 429 with Retry-After")
		}
	}
	resp, err := s.client.get(ctx, hs.URL+"/Observation?status=other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if gap := otherAt.Sub(refusedAt); gap < 900*time.Millisecond {
		t.Fatalf("another request went out %v after a 429 asking for 1 s", gap)
	}
}

// TestNextLinkAfterEntriesIsPrefetched: a Bundle whose link array follows
// its entries still has its next page requested before the reader is done
// with it (the body is read ahead whole, so the link is known on arrival).
func TestNextLinkAfterEntriesIsPrefetched(t *testing.T) {
	second := make(chan struct{}, 64)
	_, hs := upstream(t, fhirtest.Options{LinksLast: true, NoSort: true, Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if r.URL.Query().Get("_getpages") != "" {
			second <- struct{}{}
		}
		return nil
	}})
	for _, limit := range []int{4, 1} {
		t.Run(fmt.Sprint("cap=", limit), func(t *testing.T) {
			s := newSource(t, hs.URL, func(o *Options) { o.KeysetWindows, o.MaxInFlight = 1, limit })
			q := probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until})
			r, err := s.Open(context.Background(), q, "Observation", "", "")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			for len(second) > 0 {
				<-second
			}
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
			// The first page is open and one entry of it read.
			select {
			case <-second:
			case <-time.After(10 * time.Second):
				t.Fatal("the next page was not requested while the first was read")
			}
		})
	}
}
