package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// serve starts while its upstream is down; kick-offs answer 503 until the
// upstream is up, then export.
func TestServeStartsWhileTheUpstreamIsDown(t *testing.T) {
	addr := freeAddr(t) // nothing listens there yet
	s := startServer(t, "", "--source-url", "http://"+addr)
	r := do(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	requireOutcome(t, r, http.StatusServiceUnavailable, "unavailable")

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	fs := fhirtest.New(fhirtest.Options{})
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(fs)
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	defer hs.Close()
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""), nil)
	want := map[string][]byte{}
	for k, v := range sourceResources(t, dataDir) {
		if strings.HasPrefix(k, "Patient/") {
			want[k] = v
		}
	}
	sameSet(t, download(t, m), want)
}

// The job's transactionTime, and so the upper bound of every search, is
// the upstream's clock (its Date header), not the server's.
func TestTransactionTimeIsTheUpstreamsClock(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{})
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", clock.Format(http.TimeFormat))
		fs.ServeHTTP(w, r)
	}))
	defer hs.Close()
	s := startServer(t, "", "--source-url", hs.URL)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Observation", kickHeaders(), ""), nil)
	if tt, err := time.Parse(time.RFC3339Nano, m.TransactionTime); err != nil || !tt.Equal(clock) {
		t.Fatalf("transactionTime = %s, want the upstream's %s", m.TransactionTime, clock.Format(time.RFC3339))
	}
	want := map[string][]byte{}
	for k, v := range sourceResources(t, dataDir) {
		lu, _ := time.Parse(time.RFC3339Nano, gjson.GetBytes(v, "meta.lastUpdated").Str)
		if strings.HasPrefix(k, "Observation/") && !lu.After(clock) {
			want[k] = v
		}
	}
	if len(want) == 0 {
		t.Fatal("the oracle expects nothing")
	}
	sameSet(t, download(t, m), want)
}

// A _typeFilter whose parameter the upstream's CapabilityStatement does
// not list is refused at kick-off; under lenient handling it is dropped
// with a warning and its type is not exported at all (never unfiltered).
func TestTypeFilterWithUnsupportedParameter(t *testing.T) {
	_, hs := startUpstream(t, fhirtest.Options{Unknown: "ignore"})
	s := startServer(t, "", "--source-url", hs.URL)
	q := "/$export?_type=Observation,Condition&_typeFilter=" + url.QueryEscape("Observation?not-a-param=x")
	r := do(t, http.MethodGet, s.base+q, kickHeaders(), "")
	requireOutcome(t, r, http.StatusBadRequest, "not-a-param")

	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+q, kickHeaders("Prefer", "handling=lenient"), ""), nil)
	got := download(t, m)
	for k := range got {
		if !strings.HasPrefix(k, "Condition/") {
			t.Fatalf("exported %s: want only Conditions", k)
		}
	}
	if len(got) == 0 {
		t.Fatal("no Conditions")
	}
	if len(m.Error) == 0 {
		t.Fatal("no warning about the dropped filter")
	}
	r = do(t, http.MethodGet, m.Error[0].URL, nil, "")
	if !strings.Contains(string(r.body), "not-a-param") || !strings.Contains(string(r.body), "warning") {
		t.Errorf("warning file: %s", r.body)
	}
}

// A Group export from an upstream that ignores the compartment's search
// parameters (so it returns every patient's data) contains only the
// members' data, with a warning in error.
func TestGroupExportFromUpstreamIgnoringCompartment(t *testing.T) {
	_, hs := startUpstream(t, fhirtest.Options{IgnoreCompartment: true})
	s := startServer(t, "", "--source-url", hs.URL)
	src := sourceResources(t, dataDir)
	members := groupMembers(t, src, "care-team-a")
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Group/care-team-a/$export?_type=Patient,Observation,Condition", kickHeaders(), ""), nil)
	want := map[string][]byte{}
	for k, v := range expectedCompartment(src, members) {
		if strings.HasPrefix(k, "Patient/") || strings.HasPrefix(k, "Observation/") || strings.HasPrefix(k, "Condition/") {
			want[k] = v
		}
	}
	sameSet(t, download(t, m), want)
	if len(m.Error) == 0 {
		t.Fatal("no warning about the dropped resources")
	}
	r := do(t, http.MethodGet, m.Error[0].URL, nil, "")
	if !strings.Contains(string(r.body), "warning") || !strings.Contains(string(r.body), "dropped") {
		t.Errorf("error file: %s", r.body)
	}
}
