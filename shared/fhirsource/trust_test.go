package fhirsource

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// probed returns q with the upstream's probe recorded, as a kick-off does.
func probed(t *testing.T, s *Source, q export.Query) export.Query {
	t.Helper()
	p, err := s.Probe(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	q.Upstream = p.State
	return q
}

// A Group export from an upstream that ignores the compartment's search
// parameters (and so returns every patient's data) contains only the
// members' data, and says once per batch what was dropped.
func TestGroupExportFromUpstreamIgnoringCompartmentParams(t *testing.T) {
	d := sample(t)
	members := exporttest.GroupMembers(t, d.src, "care-team-a")
	types := []string{"Patient", "Observation", "Condition", "Encounter"}
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprint("ignores=", ignore), func(t *testing.T) {
			_, hs := upstream(t, fhirtest.Options{IgnoreCompartment: ignore})
			s := newSource(t, hs.URL, nil)
			q := probed(t, s, export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a", Until: &until})
			got := map[string][]byte{}
			var warnings []string
			for _, typ := range types {
				g, bad, w := readTypeChanging(t, s, q, typ, 0, nil)
				if len(bad) > 0 {
					t.Fatal(bad)
				}
				warnings = append(warnings, w...)
				for k, v := range g {
					got[k] = v
				}
			}
			exporttest.SameSet(t, got, ofTypes(exporttest.ExpectedCompartment(d.src, members), types...))
			// The negative control: the ignoring upstream did send other
			// patients' data, which the warnings count.
			if ignore != (len(warnings) > 0) {
				t.Fatalf("warnings = %v, want some only when the upstream ignores the parameters", warnings)
			}
			for _, w := range warnings {
				if !strings.Contains(w, "dropped") {
					t.Errorf("warning %q does not say what happened", w)
				}
			}
		})
	}
}

// A resource in the compartments of patients of two batches is exported
// once, by the first batch.
func TestResourceOfPatientsInTwoBatchesOnce(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{})
	lu := `"meta":{"lastUpdated":"2025-01-01T00:00:00.000Z"}`
	var group []string
	for i := range 6 {
		if err := fs.Add([]byte(fmt.Sprintf(`{"resourceType":"Patient","id":"p%d",%s}`, i, lu))); err != nil {
			t.Fatal(err)
		}
		group = append(group, fmt.Sprintf(`{"entity":{"reference":"Patient/p%d"}}`, i))
	}
	// o1 is p0's and p5's (subject and performer); o2 only p3's.
	for _, r := range []string{
		`{"resourceType":"Observation","id":"o1",` + lu + `,"subject":{"reference":"Patient/p5"},"performer":[{"reference":"Patient/p0"}]}`,
		`{"resourceType":"Observation","id":"o2",` + lu + `,"subject":{"reference":"Patient/p3"}}`,
		`{"resourceType":"Group","id":"g",` + lu + `,"type":"person","actual":true,"member":[` + strings.Join(group, ",") + `]}`,
	} {
		if err := fs.Add([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(fs)
	defer hs.Close()
	for _, batch := range []int{1, 2, 6} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			s := newSource(t, hs.URL, func(o *Options) { o.PatientBatch = batch })
			q := probed(t, s, export.Query{Level: bulkdata.LevelGroup, GroupID: "g", Until: &until})
			got, bad := readType(t, s, q, "Observation", 0) // fails on a repeat
			if len(bad) > 0 || len(got) != 2 {
				t.Fatalf("got %d Observations (%v), want o1 and o2 once each", len(got), bad)
			}
		})
	}
}

// Without keyset paging, offset paging over a result that changes loses
// resources that never changed: the oracle catches it (negative control of
// TestExportsAgainstEveryProfile).
func TestOffsetPagingOverChangingResultsLosesData(t *testing.T) {
	d := sample(t)
	fs := fhirtest.New(fhirtest.Options{LivePaging: true})
	if err := fs.LoadDir(d.dir); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(fs)
	defer hs.Close()
	s := newSource(t, hs.URL, nil)
	now := time.Now().UTC().Add(-time.Second)
	q := export.Query{Level: bulkdata.LevelSystem, Until: &now, Upstream: `{"sorted":false}`}
	c := &changes{fs: fs, src: d.src, updated: map[string][]byte{}, deleted: map[string]bool{}}
	got, _, _ := readTypeChanging(t, s, q, "Observation", 13, func() { c.change(t, "Observation") })
	missing := 0
	for key := range ofTypes(d.src, "Observation") {
		if _, ok := got[key]; !ok && c.updated[key] == nil && !c.deleted[key] {
			missing++
		}
	}
	if missing == 0 {
		t.Fatal("offset paging lost nothing: the changing upstream does not test what keyset paging fixes")
	}
}

// Many resources at one instant are read through next links; when those
// break (an offset cap), the search goes on by keyset once and then ends
// with an error rather than silently.
func TestManyResourcesAtOneInstant(t *testing.T) {
	for _, maxOffset := range []int{0, 10} {
		t.Run(fmt.Sprint("maxOffset=", maxOffset), func(t *testing.T) {
			fs := fhirtest.New(fhirtest.Options{MaxOffset: maxOffset, LivePaging: true})
			for i := range 40 {
				lu := "2025-01-01T00:00:00.000Z"
				if i >= 30 {
					lu = fmt.Sprintf("2025-01-02T00:00:%02d.000Z", i)
				}
				if err := fs.Add([]byte(fmt.Sprintf(`{"resourceType":"Basic","id":"b%02d","meta":{"lastUpdated":%q}}`, i, lu))); err != nil {
					t.Fatal(err)
				}
			}
			hs := httptest.NewServer(fs)
			defer hs.Close()
			s := newSource(t, hs.URL, nil)
			got, bad := readType(t, s, probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until}), "Basic", 4)
			if maxOffset == 0 {
				if len(got) != 40 || len(bad) > 0 {
					t.Fatalf("got %d of 40 (%v)", len(got), bad)
				}
				return
			}
			if len(bad) != 1 || !strings.Contains(bad[0], "offset") {
				t.Fatalf("errors = %v, want one naming the offset cap", bad)
			}
		})
	}
}

// A next link to another origin is not followed with the upstream's
// credentials: it ends the search with an error, or (FollowCrossOrigin)
// is followed without them.
func TestNextLinkToAnotherOriginGetsNoCredentials(t *testing.T) {
	var mu sync.Mutex
	var leaked []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		leaked = append(leaked, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/fhir+json")
		fmt.Fprint(w, `{"resourceType":"Bundle","type":"searchset","entry":[]}`)
	}))
	defer other.Close()
	_, hs := upstream(t, fhirtest.Options{})
	// A proxy in front of the upstream rewrites its first next link to
	// point at the other server.
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, hs.URL+r.URL.RequestURI(), r.Body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var b strings.Builder
		_, _ = fmt.Fprint(&b, "")
		buf := make([]byte, 1<<20)
		for {
			n, err := resp.Body.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		body := strings.Replace(b.String(), `"relation":"next","url":"?`, `"relation":"next","url":"`+other.URL+`/?`, 1)
		w.Header().Set("Content-Type", "application/fhir+json")
		fmt.Fprint(w, body)
	}))
	defer proxy.Close()
	for _, follow := range []bool{false, true} {
		t.Run(fmt.Sprint("follow=", follow), func(t *testing.T) {
			mu.Lock()
			leaked = nil
			mu.Unlock()
			s := newSource(t, proxy.URL, func(o *Options) {
				o.Auth = StaticToken("s3cret")
				o.FollowCrossOrigin = follow
				o.KeysetWindows = 1 // one search: the proxy rewrites each page's next link
			})
			// Offset paging (no keyset), so the next links are followed.
			q := export.Query{Level: bulkdata.LevelSystem, Until: &until, Upstream: `{"sorted":false}`}
			_, bad := readType(t, s, q, "Observation", 0)
			mu.Lock()
			defer mu.Unlock()
			for _, a := range leaked {
				if a != "" {
					t.Fatalf("the other origin got credentials %q", a)
				}
			}
			if follow {
				if len(leaked) == 0 || len(bad) > 0 {
					t.Fatalf("followed %d times, errors %v; want followed without credentials", len(leaked), bad)
				}
				return
			}
			if len(leaked) > 0 || len(bad) != 1 || !strings.Contains(bad[0], "another origin") {
				t.Fatalf("requests to the other origin %d, errors %v; want none and one error", len(leaked), bad)
			}
		})
	}
}

// A wait the upstream asks for that would end past the step's stop time
// gives up then with ErrOutOfTime (the chunk keeps its cursor), without
// asking again.
func TestThrottledPastTheStopTime(t *testing.T) {
	var asked atomic.Int64
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if r.URL.Path != "/Patient" {
			return nil
		}
		asked.Add(1)
		return &fhirtest.Fault{Status: 429, Header: map[string]string{"X-RateLimit-Reset": "60"}}
	}})
	s := newSource(t, hs.URL, nil)
	ctx := export.WithStopTime(context.Background(), time.Now().Add(time.Second))
	r, err := s.Open(ctx, export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Patient", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.Next()
	if !errors.Is(err, export.ErrOutOfTime) {
		t.Fatalf("got %v, want ErrOutOfTime", err)
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("the upstream was asked %d times, want once", n)
	}
}

// An export without _type leaves out the conformance and terminology
// types, empty types, and a type the upstream lists but refuses to search.
func TestDefaultTypes(t *testing.T) {
	fs, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if r.URL.Path == "/Organization" {
			return &fhirtest.Fault{Status: http.StatusBadRequest}
		}
		return nil
	}})
	if err := fs.Add([]byte(`{"resourceType":"StructureDefinition","id":"sd"}`), []byte(`{"resourceType":"CodeSystem","id":"cs"}`)); err != nil {
		t.Fatal(err)
	}
	s := newSource(t, hs.URL, nil)
	all, err := s.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.DefaultTypes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	has := map[string]bool{}
	for _, typ := range got {
		has[typ] = true
	}
	if !has["Patient"] || !has["Observation"] || has["Organization"] || has["StructureDefinition"] || has["CodeSystem"] {
		t.Fatalf("default types %v: want Patient and Observation, not Organization (refused) nor the conformance types (of %v)", got, all)
	}
	if len(got) != len(all)-3 {
		t.Fatalf("default types %v, want all of %v but three", got, all)
	}
}

func TestProbeRecordsSortSupport(t *testing.T) {
	for _, tc := range []struct {
		opts fhirtest.Options
		want string
	}{
		{fhirtest.Options{}, `{"sorted":true,"idTieBreak":true}`},
		{fhirtest.Options{NoSort: true}, `{"sorted":false}`},
	} {
		_, hs := upstream(t, tc.opts)
		s := newSource(t, hs.URL, nil)
		p, err := s.Probe(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if p.State != tc.want || p.Now.IsZero() {
			t.Errorf("NoSort=%v: state %s, clock %v; want %s and the upstream's clock", tc.opts.NoSort, p.State, p.Now, tc.want)
		}
	}
}

// More resources at one instant than a cursor keeps ids of are read
// exactly once across chunks, and every cursor stays small enough for a
// Step Functions payload.
func TestCursorStaysSmallAtOneCrowdedInstant(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{})
	n := maxAtIDs + 150
	for i := range n {
		if err := fs.Add([]byte(fmt.Sprintf(`{"resourceType":"Basic","id":"basic-%05d","meta":{"lastUpdated":"2025-01-01T00:00:00.000Z"}}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(fs)
	defer hs.Close()
	s := newSource(t, hs.URL, func(o *Options) { o.PageSize = 100 })
	q := probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until})
	seen := map[string]bool{}
	cursor := ""
	for done := false; !done; {
		r, err := s.Open(context.Background(), q, "Basic", "", cursor)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 97; i++ {
			line, err := r.Next()
			if err == io.EOF {
				done = true
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			id := gjson.GetBytes(line, "id").Str
			if seen[id] {
				t.Fatalf("%s read twice", id)
			}
			seen[id] = true
		}
		cursor = r.Cursor()
		r.Close()
		if len(cursor) > 64<<10 {
			t.Fatalf("cursor of %d bytes", len(cursor))
		}
	}
	if len(seen) != n {
		t.Fatalf("read %d of %d", len(seen), n)
	}
}

// A _since export from an upstream that ignores _lastUpdated contains only
// what changed since, with a warning; resources updated after the upper
// bound are left to the next export.
func TestSinceFromUpstreamIgnoringLastUpdated(t *testing.T) {
	d := sample(t)
	since := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	hi := time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC)
	want := where(ofTypes(d.src, "Observation"), func(l []byte) bool {
		lu, _ := time.Parse(time.RFC3339Nano, gjson.GetBytes(l, "meta.lastUpdated").Str)
		return lu.After(since) && !lu.After(hi)
	})
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprint("ignores=", ignore), func(t *testing.T) {
			_, hs := upstream(t, fhirtest.Options{IgnoreLastUpdated: ignore})
			s := newSource(t, hs.URL, nil)
			q := probed(t, s, export.Query{Level: bulkdata.LevelSystem, Since: &since, Until: &hi})
			got, bad, warnings := readTypeChanging(t, s, q, "Observation", 11, nil)
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			exporttest.SameSet(t, got, want)
			if ignore != (len(warnings) == 1) || (ignore && !strings.Contains(warnings[0], "_lastUpdated")) {
				t.Fatalf("warnings %v, want one about _lastUpdated only when the upstream ignores it", warnings)
			}
		})
	}
}

// A _typeFilter the upstream lists but does not apply (it returns every
// Observation) exports only the matching resources: each is checked here,
// and the others are counted in a warning.
func TestTypeFilterCheckedLocally(t *testing.T) {
	d := sample(t)
	want := where(ofTypes(d.src, "Observation"), func(l []byte) bool {
		return gjson.GetBytes(l, "category.0.coding.0.code").Str == "laboratory"
	})
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprint("ignores=", ignore), func(t *testing.T) {
			opts := fhirtest.Options{}
			if ignore {
				opts.IgnoreParams = []string{"category"}
			}
			_, hs := upstream(t, opts)
			s := newSource(t, hs.URL, nil)
			q := probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until, TypeFilters: []string{"category=laboratory"}})
			got, bad, warnings := readTypeChanging(t, s, q, "Observation", 9, nil)
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			exporttest.SameSet(t, got, want)
			if ignore != (len(warnings) == 1) || (ignore && !strings.Contains(warnings[0], "_typeFilter")) {
				t.Fatalf("warnings %v, want one about the _typeFilter only when the upstream ignores it", warnings)
			}
		})
	}
	// A parameter bulkfhir cannot evaluate is refused even when the
	// upstream lists it.
	_, hs := upstream(t, fhirtest.Options{})
	s := newSource(t, hs.URL, nil)
	bad, err := s.UnsupportedParams(context.Background(), "Observation", "category=laboratory&code:above=x&not-listed=1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(bad, ",") != "code:above,not-listed" {
		t.Fatalf("unsupported = %v, want code:above (not evaluable here) and not-listed (not listed upstream)", bad)
	}
}

// An export through SMART Backend Services from an upstream whose token
// endpoint refuses an array aud (as Medplum's does) gets its token and its
// data.
func TestBackendServicesAgainstAStrictTokenEndpoint(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ep := &fhirtest.TokenEndpoint{PublicKey: key.Public(), ClientID: "bulkfhir", RejectArrayAud: true}
	tokens := httptest.NewServer(ep)
	defer tokens.Close()
	ep.Audience = tokens.URL + "/token"
	fs, hs := upstream(t, fhirtest.Options{})
	fs.SetTokenCheck(func(bearer string) bool { return slices.Contains(ep.Issued(), bearer) })
	s := newSource(t, hs.URL, func(o *Options) {
		o.Auth = &BackendServices{ClientID: "bulkfhir", TokenURL: ep.Audience, Key: key}
	})
	got, bad := readType(t, s, probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until}), "Patient", 0)
	if len(bad) > 0 || len(got) != len(ofTypes(sample(t).src, "Patient")) || len(ep.Issued()) == 0 {
		t.Fatalf("read %d patients (%v) with %d tokens issued", len(got), bad, len(ep.Issued()))
	}
}

// TestPlanCountsATypeOncePerJob: Plan runs once per stored patient batch;
// the type's _summary=count for the job's bounds is asked once, not once
// per batch, and an empty type still gets no segments.
func TestPlanCountsATypeOncePerJob(t *testing.T) {
	fs, hs := upstream(t, fhirtest.Options{})
	s := newSource(t, hs.URL, nil)
	patients := []string{}
	for id := range sample(t).src {
		if strings.HasPrefix(id, "Patient/") {
			patients = append(patients, strings.TrimPrefix(id, "Patient/"))
		}
	}
	slices.Sort(patients)
	plan := func(batch []string, typ string) []string {
		segs, err := s.Plan(context.Background(), export.Query{Level: bulkdata.LevelPatient, Patients: batch, Until: &until}, typ)
		if err != nil {
			t.Fatal(err)
		}
		return segs
	}
	before := fs.Requests()
	for i := range 4 {
		if segs := plan(patients[i*3:i*3+3], "Observation"); len(segs) == 0 {
			t.Fatalf("batch %d: no segments for Observation", i)
		}
	}
	if n := fs.Requests() - before; n != 1 {
		t.Errorf("4 batches made %d upstream requests at Plan, want 1 count", n)
	}
	other := until.Add(-time.Hour)
	if _, err := s.Plan(context.Background(), export.Query{Level: bulkdata.LevelPatient, Patients: patients[:3], Until: &other}, "Observation"); err != nil {
		t.Fatal(err)
	}
	if n := fs.Requests() - before; n != 2 {
		t.Errorf("other bounds: %d requests in all, want a second count", n)
	}
	if segs := plan(patients[:3], "Basic"); len(segs) != 0 {
		t.Errorf("a type without data got segments %v", segs)
	}
}
