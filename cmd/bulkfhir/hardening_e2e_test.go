package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// TestHostileRequests drives hostile and malformed requests at the built
// server: each is a 4xx OperationOutcome naming what was wrong, and lenient
// handling never turns one into a wider export (issue 18).
func TestHostileRequests(t *testing.T) {
	s := startServer(t, dataDir)
	b := s.base
	lenient := http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async, handling=lenient"}}
	post := kickHeaders("Content-Type", "application/fhir+json")
	many := strings.Repeat("_pretty=1&", 101)
	cases := []struct {
		name   string
		method string
		url    string
		header http.Header
		body   string
		status int
		want   string
	}{
		// Strict parsing of the raw query: net/url would drop these pairs.
		{"semicolon after _type", "GET", b + "/$export?_type=Patient;", kickHeaders(), "", 400, "';'"},
		{"semicolon after _type, lenient", "GET", b + "/$export?_type=Patient;", lenient, "", 400, "';'"},
		{"semicolon in _typeFilter", "GET", b + "/$export?_typeFilter=Observation%3Fcode%3Da;x", kickHeaders(), "", 400, "';'"},
		{"bad escape", "GET", b + "/$export?_type=%zz", kickHeaders(), "", 400, "percent-encoding"},
		{"bad escape in name", "GET", b + "/$export?%zz=1", lenient, "", 400, "percent-encoding"},
		{"pair without name", "GET", b + "/$export?=Patient", kickHeaders(), "", 400, "no parameter name"},
		{"too many parameters", "GET", b + "/$export?" + many, kickHeaders(), "", 400, "more than 100"},
		{"too many parameters, lenient", "GET", b + "/$export?" + many, lenient, "", 400, "more than 100"},
		{"_since twice", "GET", b + "/$export?_since=2020-01-01T00:00:00Z&_since=2021-01-01T00:00:00Z", lenient, "", 400, "only once"},
		{"_outputFormat in query and body", "POST", b + "/$export?_outputFormat=ndjson", post,
			`{"resourceType":"Parameters","parameter":[{"name":"_outputFormat","valueString":"ndjson"}]}`, 400, "only once"},
		// Lenient handling refuses what it could only drop by widening.
		{"lenient unsupported _typeFilter", "GET", b + "/$export?_type=Patient&_typeFilter=Patient%3Fgender%3Dfemale", lenient, "", 400, "_typeFilter"},
		{"lenient unknown parameter", "GET", b + "/$export?_type=Patient&_typeFiltr=Patient%3Fgender%3Dfemale", lenient, "", 400, "_typeFiltr"},
		{"lenient only unknown types", "GET", b + "/$export?_type=NotAType", lenient, "", 400, "every type"},
		{"lenient only non-compartment types", "GET", b + "/Patient/$export?_type=Organization", lenient, "", 400, "Patient compartment"},
		{"lenient patient in GET", "GET", b + "/Patient/$export?patient=Patient/1", lenient, "", 400, "patient"},
		{"lenient bad _since", "GET", b + "/$export?_since=yesterday", lenient, "", 400, "_since"},
		{"lenient bad _elements", "GET", b + "/$export?_elements=Patient.name.given", lenient, "", 400, "_elements"},
		// Ids.
		{"group dot", "GET", b + "/Group/./$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"group dot dot", "GET", b + "/Group/../$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"group read dot dot", "GET", b + "/Group/..", nil, "", 400, "not a FHIR id"},
		{"group id too long", "GET", b + "/Group/" + strings.Repeat("g", 65) + "/$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"group id bad char", "GET", b + "/Group/a%20b/$export", kickHeaders(), "", 400, "not a FHIR id"},
		{"job id 3000 chars", "GET", b + "/bulkstatus/" + strings.Repeat("a", 3000), nil, "", 404, "no such export"},
		{"job id 3000 chars, DELETE", "DELETE", b + "/bulkstatus/" + strings.Repeat("a", 3000), nil, "", 404, "no such export"},
		{"job id with NUL", "GET", b + "/bulkstatus/ab%00cd", nil, "", 404, "no such export"},
		// Group search goes through the same parser.
		{"group search semicolon", "GET", b + "/Group?name=a;b", nil, "", 400, "';'"},
		{"group search repeated", "GET", b + "/Group?identifier=a&identifier=b", nil, "", 400, "only once"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireOutcome(t, do(t, tc.method, tc.url, tc.header, tc.body), tc.status, tc.want)
		})
	}
}

// TestLiveJobCapHoldsUnderConcurrentKickoffs: 50 simultaneous kick-offs of
// one client with --max-live-jobs 5 get exactly 5 × 202 and 45 × 429, and a
// kick-off right after a DELETE gets 202. The upstream holds every search
// until the test ends, so no job can finish and free a place by itself.
func TestLiveJobCapHoldsUnderConcurrentKickoffs(t *testing.T) {
	fs := fhirtest.New(fhirtest.Options{})
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/metadata") {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s := startServer(t, "", "--source-url", hs.URL, "--max-live-jobs", "5")
	t.Cleanup(func() { close(release) }) // runs before the server stops
	const n = 50
	statuses := make([]int, n)
	locations := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodGet, s.base+"/$export", nil)
			req.Header = kickHeaders()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("kick-off %d: %v", i, err)
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
			locations[i] = resp.Header.Get("Content-Location")
		}(i)
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	first := ""
	for i, st := range statuses {
		count[st]++
		if st == http.StatusAccepted && first == "" {
			first = locations[i]
		}
	}
	if count[http.StatusAccepted] != 5 || count[http.StatusTooManyRequests] != n-5 {
		t.Fatalf("statuses = %v, want 5 × 202 and %d × 429", count, n-5)
	}
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), http.StatusTooManyRequests, "5 exports")
	if d := do(t, http.MethodDelete, first, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", d.status, d.body)
	}
	kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), http.StatusTooManyRequests, "")
}
