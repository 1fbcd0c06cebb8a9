package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// These tests run bulkfhir serve in front of a FHIR server (the test
// server in shared/fhirtest, over HTTP) and check the exports with the same
// oracles as the NDJSON source's.

func startUpstream(t *testing.T, opts fhirtest.Options) (*fhirtest.Server, *httptest.Server) {
	t.Helper()
	fs := fhirtest.New(opts)
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(fs)
	t.Cleanup(hs.Close)
	return fs, hs
}

func TestUpstreamExportsMatchTheSource(t *testing.T) {
	fs, hs := startUpstream(t, fhirtest.Options{Token: "upstream-secret", MaxCount: 50})
	s := startServer(t, "", "--source-url", hs.URL, "--source-token", "upstream-secret", "--source-page-size", "40")
	src := sourceResources(t, dataDir)

	t.Run("system", func(t *testing.T) {
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), nil)
		if len(m.Error) != 0 {
			t.Errorf("errors: %v", m.Error)
		}
		sameSet(t, download(t, m), src)
	})
	t.Run("group", func(t *testing.T) {
		members := groupMembers(t, src, "care-team-a")
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Group/care-team-a/$export", kickHeaders(), ""), nil)
		sameSet(t, download(t, m), expectedCompartment(src, members))
	})
	t.Run("patient parameter", func(t *testing.T) {
		members := groupMembers(t, src, "small-cohort")
		var ids []string
		for id := range members {
			ids = append(ids, `{"name":"patient","valueReference":{"reference":"Patient/`+id+`"}}`)
		}
		body := `{"resourceType":"Parameters","parameter":[` + strings.Join(ids, ",") + `]}`
		m := waitManifest(t, kickoff(t, http.MethodPost, s.base+"/Patient/$export", kickHeaders(), body), nil)
		sameSet(t, download(t, m), expectedCompartment(src, members))
	})
	t.Run("typeFilter", func(t *testing.T) {
		q := "_type=Observation,Condition&_typeFilter=" + url.QueryEscape("Observation?category=laboratory")
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?"+q, kickHeaders(), ""), nil)
		want := map[string][]byte{}
		for k, line := range src {
			switch {
			case strings.HasPrefix(k, "Condition/"):
				want[k] = line
			case strings.HasPrefix(k, "Observation/") && gjson.GetBytes(line, "category.0.coding.0.code").Str == "laboratory":
				want[k] = line
			}
		}
		sameSet(t, download(t, m), want)
	})
	t.Run("elements", func(t *testing.T) {
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient&_elements=gender", kickHeaders(), ""), nil)
		got := download(t, m)
		if len(got) == 0 {
			t.Fatal("no patients")
		}
		for k, line := range got {
			if gjson.GetBytes(line, "name").Exists() || !gjson.GetBytes(line, "gender").Exists() ||
				!strings.Contains(string(line), `"SUBSETTED"`) || strings.Count(string(line), `"SUBSETTED"`) != 1 {
				t.Fatalf("%s not subsetted once: %s", k, line)
			}
		}
	})
	t.Run("deleted and relevant provenance", func(t *testing.T) {
		// The changes are stamped two seconds back: the job's upper bound
		// is the upstream's clock, from a Date header of whole seconds.
		since := time.Now().UTC().Add(-5 * time.Second)
		at := time.Now().UTC().Add(-2 * time.Second)
		var obs []string
		for k := range src {
			if strings.HasPrefix(k, "Observation/") && len(obs) < 2 {
				obs = append(obs, strings.TrimPrefix(k, "Observation/"))
			}
		}
		for _, id := range obs {
			fs.Delete("Observation", id, at)
		}
		now := at.Format(time.RFC3339Nano)
		if err := fs.Add(
			[]byte(`{"resourceType":"Provenance","id":"prov-obs","meta":{"lastUpdated":"`+now+`"},"target":[{"reference":"Observation/x"}],"recorded":"2025-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/p"}}]}`),
			[]byte(`{"resourceType":"Provenance","id":"prov-org","meta":{"lastUpdated":"`+now+`"},"target":[{"reference":"Organization/y"}],"recorded":"2025-01-01T00:00:00Z","agent":[{"who":{"reference":"Practitioner/p"}}]}`),
			[]byte(`{"resourceType":"Observation","id":"new-obs","meta":{"lastUpdated":"`+now+`"},"status":"final","code":{"text":"x"}}`),
		); err != nil {
			t.Fatal(err)
		}
		q := "_type=Observation&_since=" + url.QueryEscape(since.Format(time.RFC3339Nano)) + "&includeAssociatedData=RelevantProvenanceResources"
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?"+q, kickHeaders(), ""), nil)
		got := download(t, m)
		if _, ok := got["Provenance/prov-obs"]; !ok || len(got) != 2 {
			t.Errorf("output = %v, want new-obs and the Provenance of an Observation only", keys(got))
		}
		var deleted []string
		for _, d := range m.Deleted {
			if d.Type != "Bundle" {
				t.Errorf("deleted type = %q", d.Type)
			}
			r := do(t, http.MethodGet, d.URL, nil, "")
			for _, line := range bytes.Split(bytes.TrimSpace(r.body), []byte("\n")) {
				if gjson.GetBytes(line, "type").Str != "transaction" || gjson.GetBytes(line, "entry.0.request.method").Str != "DELETE" {
					t.Errorf("deleted line %s", line)
				}
				deleted = append(deleted, gjson.GetBytes(line, "entry.0.request.url").Str)
			}
		}
		if len(deleted) != 2 || !strings.Contains(strings.Join(deleted, " "), "Observation/"+obs[0]) {
			t.Errorf("deleted = %v, want Observation/%v", deleted, obs)
		}
		for _, d := range deleted {
			if _, ok := got[d]; ok {
				t.Errorf("%s is in both output and deleted", d)
			}
		}
	})
	t.Run("unreachable upstream", func(t *testing.T) {
		hs.Close()
		r := do(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
		requireOutcome(t, r, http.StatusServiceUnavailable, "unavailable")
		var oo struct {
			Issue []struct{ Code string } `json:"issue"`
		}
		json.Unmarshal(r.body, &oo)
		if len(oo.Issue) == 0 || oo.Issue[0].Code != "transient" || r.header.Get("Retry-After") == "" {
			t.Errorf("want a transient issue and Retry-After: %s", r.body)
		}
	})
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestUpstreamPageFailureIsPartialSuccess: a page the upstream refuses
// for good is reported in the manifest's error array; the rest exports.
func TestUpstreamPageFailureIsPartialSuccess(t *testing.T) {
	var pages atomic.Int64
	_, hs := startUpstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		// A later page of the Observation search: a next link, or a
		// search from the last instant read (keyset paging).
		later := strings.Contains(r.URL.RawQuery, "_getpagesoffset=") ||
			(r.URL.Path == "/Observation" && strings.Contains(strings.Join(r.URL.Query()["_lastUpdated"], ","), "ge"))
		if later && pages.Add(1) == 2 {
			return &fhirtest.Fault{Status: http.StatusBadRequest}
		}
		return nil
	}})
	s := startServer(t, "", "--source-url", hs.URL, "--source-page-size", "30")
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Observation,Patient", kickHeaders(), ""), nil)
	if len(m.Error) != 1 {
		t.Fatalf("error = %v, want one file", m.Error)
	}
	r := do(t, http.MethodGet, m.Error[0].URL, nil, "")
	if !strings.Contains(string(r.body), "OperationOutcome") || !strings.Contains(string(r.body), "400") {
		t.Errorf("error file: %s", r.body)
	}
	if len(download(t, m)) == 0 {
		t.Error("nothing exported")
	}
}
