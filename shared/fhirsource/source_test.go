package fhirsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// dataset is generated sample data, loaded into a test FHIR server and read
// back by the oracles.
type dataset struct {
	dir string
	src map[string][]byte
}

var (
	dataOnce sync.Once
	data     dataset
)

func sample(t *testing.T) dataset {
	t.Helper()
	dataOnce.Do(func() {
		dir, err := osMkdirTemp()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sampledata.Generate(dir, sampledata.Options{Patients: 12, Seed: 7}); err != nil {
			t.Fatal(err)
		}
		data = dataset{dir: dir, src: exporttest.ReadResources(t, dir)}
	})
	return data
}

// upstream starts a test FHIR server over the sample data.
func upstream(t *testing.T, opts fhirtest.Options) (*fhirtest.Server, *httptest.Server) {
	t.Helper()
	fs := fhirtest.New(opts)
	if err := fs.LoadDir(sample(t).dir); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(fs)
	t.Cleanup(hs.Close)
	return fs, hs
}

func newSource(t *testing.T, base string, mod func(*Options)) *Source {
	t.Helper()
	o := Options{BaseURL: base, PageSize: 7, PatientBatch: 4, Backoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var until = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

// readType reads every segment of a type, reopening the reader from its
// cursor after every stopEvery resources (0: never), as chunks stopped by
// their time budget do. It fails on a resource returned twice.
func readType(t *testing.T, s *Source, q export.Query, typ string, stopEvery int) (got map[string][]byte, bad []string) {
	t.Helper()
	got, bad, _ = readTypeChanging(t, s, q, typ, stopEvery, nil)
	return got, bad
}

// readTypeChanging is readType that calls mid (when not nil) once, after
// the first chunk, so the upstream can change while the type is read. It
// returns the warnings (BadRecordError.Warning) apart.
func readTypeChanging(t *testing.T, s *Source, q export.Query, typ string, stopEvery int, mid func()) (got map[string][]byte, bad, warnings []string) {
	t.Helper()
	lines, bad, warnings, _ := readLines(t, s, q, typ, stopEvery, mid)
	got = map[string][]byte{}
	for _, line := range lines {
		h, ok := fhir.Peek([]byte(line))
		if !ok {
			t.Fatalf("not a resource: %s", line)
		}
		key := h.ResourceType + "/" + h.ID
		if _, dup := got[key]; dup {
			t.Fatalf("%s returned twice", key)
		}
		got[key] = []byte(line)
	}
	return got, bad, warnings
}

func readAll(t *testing.T, s *Source, q export.Query, types []string, stopEvery int) map[string][]byte {
	t.Helper()
	all := map[string][]byte{}
	for _, typ := range types {
		got, bad := readType(t, s, q, typ, stopEvery)
		if len(bad) > 0 {
			t.Fatalf("%s: unexpected errors %v", typ, bad)
		}
		for k, v := range got {
			all[k] = v
		}
	}
	return all
}

func ofTypes(src map[string][]byte, types ...string) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range src {
		typ, _, _ := strings.Cut(k, "/")
		for _, t := range types {
			if t == typ {
				out[k] = v
			}
		}
	}
	return out
}

func where(src map[string][]byte, keep func(line []byte) bool) map[string][]byte {
	out := map[string][]byte{}
	for k, v := range src {
		if keep(v) {
			out[k] = v
		}
	}
	return out
}

func TestTypesFromCapabilityStatement(t *testing.T) {
	_, hs := upstream(t, fhirtest.Options{})
	s := newSource(t, hs.URL, nil)
	types, err := s.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(types, ",") == "" || types[0] != "AllergyIntolerance" {
		t.Fatalf("types = %v", types)
	}
	for _, want := range []string{"Patient", "Observation", "Group"} {
		found := false
		for _, typ := range types {
			found = found || typ == want
		}
		if !found {
			t.Errorf("%s missing from %v", want, types)
		}
	}
}

func TestExportLevels(t *testing.T) {
	d := sample(t)
	_, hs := upstream(t, fhirtest.Options{})
	since := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	members := exporttest.GroupMembers(t, d.src, "care-team-a")
	patients := exporttest.GroupMembers(t, d.src, "small-cohort")
	var two []string
	for p := range patients {
		if len(two) < 2 {
			two = append(two, p)
		}
	}
	twoSet := map[string]bool{two[0]: true, two[1]: true}
	clinical := []string{"Patient", "Observation", "Condition", "Encounter", "Immunization", "AllergyIntolerance", "Group"}
	cases := []struct {
		name  string
		q     export.Query
		types []string
		want  map[string][]byte
	}{
		{"system", export.Query{Level: bulkdata.LevelSystem, Until: &until},
			[]string{"Patient", "Observation", "Practitioner", "Group"},
			ofTypes(d.src, "Patient", "Observation", "Practitioner", "Group")},
		{"system since", export.Query{Level: bulkdata.LevelSystem, Since: &since, Until: &until},
			[]string{"Observation", "Condition"},
			where(ofTypes(d.src, "Observation", "Condition"), func(l []byte) bool {
				lu, _ := fhir.ParseLastUpdated(gjson.GetBytes(l, "meta.lastUpdated").Str)
				return lu.After(since)
			})},
		{"group", export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a", Until: &until},
			clinical, ofTypes(exporttest.ExpectedCompartment(d.src, members), clinical...)},
		{"group with patient", export.Query{Level: bulkdata.LevelGroup, GroupID: "small-cohort", Patients: two, Until: &until},
			clinical, ofTypes(exporttest.ExpectedCompartment(d.src, twoSet), clinical...)},
		{"patient list", export.Query{Level: bulkdata.LevelPatient, Patients: two, Until: &until},
			clinical, ofTypes(exporttest.ExpectedCompartment(d.src, twoSet), clinical...)},
		{"all patients", export.Query{Level: bulkdata.LevelPatient, Until: &until},
			[]string{"Patient", "Observation"}, ofTypes(d.src, "Patient", "Observation")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSource(t, hs.URL, nil)
			for _, stop := range []int{0, 5} {
				got := readAll(t, s, tc.q, tc.types, stop)
				if len(tc.want) == 0 {
					t.Fatal("the oracle expects nothing: the case tests nothing")
				}
				exporttest.SameSet(t, got, tc.want)
			}
		})
	}
}

func TestTypeFiltersAreOredWithoutDuplicates(t *testing.T) {
	d := sample(t)
	fs, hs := upstream(t, fhirtest.Options{})
	s := newSource(t, hs.URL, nil)
	q := export.Query{Level: bulkdata.LevelSystem, Until: &until,
		TypeFilters: []string{"category=laboratory", "category=vital-signs&status=final"}}
	got, bad := readType(t, s, q, "Observation", 3)
	if len(bad) > 0 {
		t.Fatal(bad)
	}
	want := where(ofTypes(d.src, "Observation"), func(l []byte) bool {
		c := gjson.GetBytes(l, "category.0.coding.0.code").Str
		return c == "laboratory" || c == "vital-signs"
	})
	exporttest.SameSet(t, got, want)
	if fs.Requests() == 0 {
		t.Fatal("no upstream requests")
	}
	// A filter that overlaps the first entirely adds nothing twice.
	q.TypeFilters = []string{"category=laboratory", "status=final"}
	got, _ = readType(t, s, q, "Observation", 0)
	exporttest.SameSet(t, got, ofTypes(d.src, "Observation"))
}

func TestElementsPassedUpstreamWhenHonoured(t *testing.T) {
	for _, honours := range []bool{true, false} {
		t.Run(fmt.Sprint("honours=", honours), func(t *testing.T) {
			var sawElements bool
			var mu sync.Mutex
			_, hs := upstream(t, fhirtest.Options{NoElements: !honours, Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
				if strings.Contains(r.URL.RawQuery, "_elements=gender") {
					mu.Lock()
					sawElements = true
					mu.Unlock()
				}
				return nil
			}})
			s := newSource(t, hs.URL, nil)
			q := export.Query{Level: bulkdata.LevelSystem, Until: &until, Elements: []string{"gender"}}
			got, _ := readType(t, s, q, "Patient", 0)
			if len(got) != len(ofTypes(sample(t).src, "Patient")) {
				t.Fatalf("got %d patients", len(got))
			}
			if sawElements != honours {
				t.Fatalf("_elements sent upstream = %v, want %v", sawElements, honours)
			}
		})
	}
}

// TestUpstreamFaults runs a Group export through each kind of upstream
// trouble and checks every resource arrives exactly once.
func TestUpstreamFaults(t *testing.T) {
	d := sample(t)
	members := exporttest.GroupMembers(t, d.src, "even-cohort")
	types := []string{"Patient", "Observation", "Encounter"}
	want := ofTypes(exporttest.ExpectedCompartment(d.src, members), types...)
	every := func(n int64, f *fhirtest.Fault) func(*http.Request, int64) *fhirtest.Fault {
		return func(r *http.Request, i int64) *fhirtest.Fault {
			if r.URL.Path == "/metadata" || i%n != 0 {
				return nil
			}
			return f
		}
	}
	cases := []struct {
		name string
		opts fhirtest.Options
		mod  func(*Options)
	}{
		{"plain", fhirtest.Options{}, nil},
		{"absolute links", fhirtest.Options{AbsoluteLinks: true}, nil},
		{"links after entries", fhirtest.Options{LinksLast: true}, nil},
		{"pretty-printed", fhirtest.Options{Pretty: true}, nil},
		{"429 bursts", fhirtest.Options{Fault: every(3, &fhirtest.Fault{Status: 429, RetryAfter: "0"})}, nil},
		{"5xx then success", fhirtest.Options{Fault: every(4, &fhirtest.Fault{Status: 503})}, nil},
		{"slow pages", fhirtest.Options{Fault: every(9, &fhirtest.Fault{Delay: 150 * time.Millisecond})}, func(o *Options) {
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.ResponseHeaderTimeout = 50 * time.Millisecond
			o.HTTPClient = &http.Client{Transport: tr}
		}},
		{"bodies cut short", fhirtest.Options{Fault: every(4, &fhirtest.Fault{Truncate: 900})}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs, hs := upstream(t, tc.opts)
			s := newSource(t, hs.URL, tc.mod)
			// By next links, then by keyset as the probe finds.
			for _, probe := range []bool{false, true} {
				q := export.Query{Level: bulkdata.LevelGroup, GroupID: "even-cohort", Until: &until}
				if probe {
					q = probed(t, s, q)
				}
				got := readAll(t, s, q, types, 6)
				exporttest.SameSet(t, got, want)
			}
			if fs.Requests() < 10 {
				t.Fatalf("only %d upstream requests", fs.Requests())
			}
		})
	}
}

// A 429's wait is what the upstream asks for, with Retry-After or with
// rate-limit headers alone (Medplum's 429 has no Retry-After).
func TestRetryAfterIsHonoured(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault fhirtest.Fault
	}{
		{"Retry-After", fhirtest.Fault{Status: 429, RetryAfter: "1"}},
		{"RateLimit without Retry-After", fhirtest.Fault{Status: 429, Header: map[string]string{"RateLimit": `"default";r=0;t=1`}}},
		{"X-RateLimit-Reset without Retry-After", fhirtest.Fault{Status: 429, Header: map[string]string{"X-RateLimit-Reset": "1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var refusedAt, retriedAt time.Time
			_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, n int64) *fhirtest.Fault {
				if r.URL.Path != "/Patient" {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				if refusedAt.IsZero() {
					refusedAt = time.Now()
					return &tc.fault
				}
				if retriedAt.IsZero() {
					retriedAt = time.Now()
				}
				return nil
			}})
			// The backoff alone would retry within 50 ms.
			s := newSource(t, hs.URL, nil)
			got, _ := readType(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Patient", 0)
			if len(got) == 0 {
				t.Fatal("nothing read")
			}
			if gap := retriedAt.Sub(refusedAt); gap < 900*time.Millisecond {
				t.Fatalf("retried %v after a 429 asking for 1 s", gap)
			}
		})
	}
}

func TestHugeResourcesStream(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{Pretty: true})
	big := strings.Repeat("x", 3<<20)
	var want []string
	for i := 0; i < 4; i++ {
		id := fmt.Sprintf("doc%d", i)
		want = append(want, id)
		if err := fs.Add([]byte(fmt.Sprintf(`{"resourceType":"DocumentReference","id":%q,"meta":{"lastUpdated":"2024-01-01T00:00:00Z"},"content":[{"attachment":{"data":%q}}]}`, id, big))); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(fs)
	defer hs.Close()
	s := newSource(t, hs.URL, func(o *Options) { o.PageSize = 3 })
	got, _ := readType(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until}, "DocumentReference", 1)
	if len(got) != len(want) {
		t.Fatalf("got %d resources", len(got))
	}
	for _, line := range got {
		if strings.ContainsAny(string(line), "\n\t") || !strings.Contains(string(line), big) {
			t.Fatal("resource not compacted to one line with its data intact")
		}
	}
}

func TestPermanentPageFailuresArePartialSuccess(t *testing.T) {
	cases := []struct {
		name  string
		fault *fhirtest.Fault
		want  string
	}{
		{"next link loop", &fhirtest.Fault{LoopNext: true}, "loop"},
		{"400 on a page", &fhirtest.Fault{Status: 400}, "400"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pages := 0
			var mu sync.Mutex
			_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
				if r.URL.Query().Get("_getpages") == "" {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				pages++
				if pages == 2 {
					return tc.fault
				}
				return nil
			}})
			s := newSource(t, hs.URL, nil)
			got, bad := readType(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Observation", 0)
			if len(bad) != 1 || !strings.Contains(bad[0], tc.want) {
				t.Fatalf("errors = %v, want one about %s", bad, tc.want)
			}
			if len(got) == 0 || len(got) >= len(ofTypes(sample(t).src, "Observation")) {
				t.Fatalf("read %d resources: want the pages before the failure only", len(got))
			}
		})
	}
}

func TestTransientFailureOutlastingRetriesStopsTheChunk(t *testing.T) {
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if r.URL.Path == "/Observation" {
			return &fhirtest.Fault{Status: 503}
		}
		return nil
	}})
	s := newSource(t, hs.URL, func(o *Options) { o.MaxRetries = 2 })
	r, err := s.Open(context.Background(), export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Observation", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, err = r.Next()
	var br *export.BadRecordError
	if err == nil || err == io.EOF || errors.As(err, &br) {
		t.Fatalf("err = %v, want a failure that stops the chunk", err)
	}
	if !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "3 attempts") {
		t.Fatalf("err = %v", err)
	}
}

func TestPlanSplitsLargeTypesByLastUpdated(t *testing.T) {
	d := sample(t)
	want := ofTypes(d.src, "Observation")
	cases := []struct {
		name     string
		opts     fhirtest.Options
		segments func(n int) bool
	}{
		{"sorts", fhirtest.Options{}, func(n int) bool { return n > 1 }},
		{"cannot sort", fhirtest.Options{NoSort: true}, func(n int) bool { return n == 1 }},
		{"cannot count", fhirtest.Options{NoCount: true}, func(n int) bool { return n == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, hs := upstream(t, tc.opts)
			s := newSource(t, hs.URL, func(o *Options) { o.SegmentResources = int64(len(want) / 5) })
			q := probed(t, s, export.Query{Level: bulkdata.LevelSystem, Until: &until})
			segs, err := s.Plan(context.Background(), q, "Observation")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.segments(len(segs)) {
				t.Fatalf("%d segments: %v", len(segs), segs)
			}
			got, _ := readType(t, s, q, "Observation", 9)
			exporttest.SameSet(t, got, want)
		})
	}
}

func TestUnknownGroupAndMissingPatients(t *testing.T) {
	d := sample(t)
	_, hs := upstream(t, fhirtest.Options{})
	s := newSource(t, hs.URL, nil)
	ctx := context.Background()
	if _, err := s.GroupMembers(ctx, "no-such-group"); !errors.Is(err, export.ErrGroupNotFound) {
		t.Fatalf("err = %v", err)
	}
	members, err := s.GroupMembers(ctx, "small-cohort")
	if err != nil || len(members) != len(exporttest.GroupMembers(t, d.src, "small-cohort")) {
		t.Fatalf("members = %v, %v", members, err)
	}
	missing, err := s.MissingPatients(ctx, []string{members[0], "nobody", "bad/id"})
	if err != nil || strings.Join(missing, ",") != "nobody,bad/id" {
		t.Fatalf("missing = %v, %v", missing, err)
	}
}

func TestUnreachableUpstream(t *testing.T) {
	hs := httptest.NewServer(http.NotFoundHandler())
	hs.Close()
	s := newSource(t, hs.URL, func(o *Options) { o.MaxRetries = 1 })
	if err := s.Ready(context.Background()); err == nil {
		t.Fatal("Ready succeeded against a closed server")
	}
}

func TestDeletionsFromHistory(t *testing.T) {
	fs, hs := upstream(t, fhirtest.Options{})
	s := newSource(t, hs.URL, nil)
	ctx := context.Background()
	if !s.ListsDeletions(ctx, "Observation") {
		t.Fatal("the upstream offers history-type")
	}
	obs := ofTypes(sample(t).src, "Observation")
	var ids []string
	for k := range obs {
		_, id, _ := strings.Cut(k, "/")
		ids = append(ids, id)
	}
	since := time.Now().UTC()
	fs.Delete("Observation", ids[0], since.Add(time.Second))
	fs.Delete("Observation", ids[1], since.Add(2*time.Second))
	fs.Delete("Observation", ids[2], since.Add(-time.Hour))    // before _since
	fs.Delete("Observation", ids[3], since.Add(time.Hour))     // after the upper bound
	fs.Delete("Observation", ids[4], since.Add(3*time.Second)) // deleted, then
	if err := fs.Add(obs["Observation/"+ids[4]]); err != nil { // created again
		t.Fatal(err)
	}
	upper := since.Add(time.Minute)
	r, err := s.OpenDeleted(ctx, export.Query{Level: bulkdata.LevelSystem, Since: &since, Until: &upper}, "Observation", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for {
		line, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(line))
	}
	want := []string{"Observation/" + ids[1], "Observation/" + ids[0]} // newest first
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("deleted = %v, want %v", got, want)
	}
}

func TestInvalidResourceIsABadRecord(t *testing.T) {
	var mu sync.Mutex
	served := false
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if served {
			http.NotFound(w, r)
			return
		}
		served = true
		fmt.Fprint(w, `{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"a"}},{"resource":{"resourceType":"Patient","id":"b","x":1x}},{"resource":{"resourceType":"Patient","id":"c"}}]}`)
	}))
	defer hs.Close()
	s := newSource(t, hs.URL, nil)
	r, err := s.Open(context.Background(), export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Patient", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var ids []string
	bad := 0
	for {
		line, err := r.Next()
		var br *export.BadRecordError
		if errors.As(err, &br) {
			bad++
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, gjson.GetBytes(line, "id").Str)
	}
	if strings.Join(ids, ",") != "a,c" || bad != 1 {
		t.Fatalf("ids %v, bad %d", ids, bad)
	}
}
