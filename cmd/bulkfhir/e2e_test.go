package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

func TestSystemExportReturnsEverySourceResourceOnce(t *testing.T) {
	s := startServer(t, dataDir, "--max-file-bytes", "200000")
	src := sourceResources(t, dataDir)
	url := s.base + "/$export"
	m := waitManifest(t, kickoff(t, http.MethodGet, url, kickHeaders(), ""), nil)
	if m.Request != url {
		t.Errorf("request = %q, want %q", m.Request, url)
	}
	if m.RequiresAccessToken {
		t.Errorf("requiresAccessToken = true, but links are capability URLs")
	}
	if m.Error == nil || len(m.Error) != 0 {
		t.Errorf("error = %v, want []", m.Error)
	}
	tt, err := time.Parse(time.RFC3339, m.TransactionTime)
	if err != nil || time.Since(tt) > time.Minute {
		t.Errorf("transactionTime = %q, want the kick-off instant", m.TransactionTime)
	}
	files := map[string]int{}
	for _, o := range m.Output {
		files[o.Type]++
	}
	if files["Observation"] < 2 {
		t.Errorf("Observation was not split into several files at 200 kB: %d", files["Observation"])
	}
	sameSet(t, download(t, m), src)
}

func TestSinceReturnsExactlyLaterResources(t *testing.T) {
	s := startServer(t, dataDir)
	src := sourceResources(t, dataDir)
	since := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	want := map[string][]byte{}
	for k, line := range src {
		var r struct {
			Meta struct{ LastUpdated time.Time } `json:"meta"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if r.Meta.LastUpdated.After(since) {
			want[k] = line
		}
	}
	if len(want) == 0 || len(want) == len(src) {
		t.Fatalf("bad fixture: %d of %d after _since", len(want), len(src))
	}
	url := s.base + "/$export?_since=" + since.Format(time.RFC3339)
	sameSet(t, download(t, waitManifest(t, kickoff(t, http.MethodGet, url, kickHeaders(), ""), nil)), want)

	// POST form, and _until (STU3) bounding the other side.
	body := `{"resourceType":"Parameters","parameter":[{"name":"_until","valueInstant":"` + since.Format(time.RFC3339) + `"}]}`
	got := download(t, waitManifest(t, kickoff(t, http.MethodPost, s.base+"/$export", kickHeaders(), body), nil))
	if len(got)+len(want) != len(src) {
		t.Errorf("_until returned %d, _since %d, source has %d", len(got), len(want), len(src))
	}
	for k := range got {
		if _, ok := want[k]; ok {
			t.Errorf("%s is in both _since and _until exports", k)
		}
	}
}

func TestGroupExportReturnsExactlyMembersCompartment(t *testing.T) {
	s := startServer(t, dataDir)
	src := sourceResources(t, dataDir)
	for _, gid := range []string{"small-cohort", "care-team-a", "diabetes-registry"} {
		t.Run(gid, func(t *testing.T) {
			members := groupMembers(t, src, gid)
			want := expectedCompartment(src, members)
			m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Group/"+gid+"/$export", kickHeaders(), ""), nil)
			got := download(t, m)
			sameSet(t, got, want)
			for k := range got {
				if strings.HasPrefix(k, "Patient/") && !members[strings.TrimPrefix(k, "Patient/")] {
					t.Errorf("%s is not an active member", k)
				}
			}
		})
	}
	// _since applies per resource (GR-04): an Observation updated after
	// _since is exported even when its Patient was not.
	members := groupMembers(t, src, "even-cohort")
	since := time.Date(2025, 9, 1, 0, 0, 0, 0, time.UTC)
	want := map[string][]byte{}
	for k, line := range expectedCompartment(src, members) {
		var r struct {
			Meta struct{ LastUpdated time.Time } `json:"meta"`
		}
		json.Unmarshal(line, &r)
		if r.Meta.LastUpdated.After(since) {
			want[k] = line
		}
	}
	url := s.base + "/Group/even-cohort/$export?_since=" + since.Format(time.RFC3339)
	sameSet(t, download(t, waitManifest(t, kickoff(t, http.MethodGet, url, kickHeaders(), ""), nil)), want)
}

func TestPatientExport(t *testing.T) {
	s := startServer(t, dataDir)
	src := sourceResources(t, dataDir)
	all := map[string]bool{}
	for k := range src {
		if id, ok := strings.CutPrefix(k, "Patient/"); ok {
			all[id] = true
		}
	}
	// O-04: the Patient compartment of every patient, with Patient itself.
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Patient/$export", kickHeaders(), ""), nil)
	got := download(t, m)
	sameSet(t, got, expectedCompartment(src, all))

	// POST with patient (P-10): only that patient's compartment.
	var one string
	for id := range all {
		one = id
		break
	}
	body := `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/` + one + `"}},{"name":"_type","valueString":"Patient,Observation,Encounter"}]}`
	got = download(t, waitManifest(t, kickoff(t, http.MethodPost, s.base+"/Patient/$export", kickHeaders(), body), nil))
	want := map[string][]byte{}
	for k, v := range expectedCompartment(src, map[string]bool{one: true}) {
		if typ, _, _ := strings.Cut(k, "/"); typ == "Patient" || typ == "Observation" || typ == "Encounter" {
			want[k] = v
		}
	}
	sameSet(t, got, want)

	// Unknown and non-member patients (issue 14, issue 18): accepted; the
	// known patient is exported, each unknown one is a not-found issue in
	// error, and a request naming only unknown patients exports nothing.
	mixed := `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/` + one + `"}},` +
		`{"name":"patient","valueReference":{"reference":"Patient/nobody"}},{"name":"_type","valueString":"Patient,Observation,Encounter"}]}`
	m = waitManifest(t, kickoff(t, http.MethodPost, s.base+"/Patient/$export", kickHeaders(), mixed), nil)
	sameSet(t, download(t, m), want)
	requireNotFound(t, m, "Patient/nobody")
	bad := `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/nobody"}}]}`
	for _, lenient := range []string{"respond-async", "respond-async, handling=lenient"} {
		for _, url := range []string{s.base + "/Patient/$export", s.base + "/Group/small-cohort/$export"} {
			h := kickHeaders()
			h.Set("Prefer", lenient)
			m = waitManifest(t, kickoff(t, http.MethodPost, url, h, bad), nil)
			if len(m.Output) != 0 {
				t.Errorf("%s with only an unknown patient (%s) exported %+v, want nothing", url, lenient, m.Output)
			}
			requireNotFound(t, m, "Patient/nobody")
		}
	}
}

// requireNotFound asserts the manifest's error files hold a not-found
// OperationOutcome mentioning want.
func requireNotFound(t *testing.T, m manifest, want string) {
	t.Helper()
	for _, e := range m.Error {
		r := do(t, http.MethodGet, e.URL, nil, "")
		for _, line := range strings.Split(strings.TrimSpace(string(r.body)), "\n") {
			if strings.Contains(line, want) && strings.Contains(line, `"not-found"`) {
				return
			}
		}
	}
	t.Errorf("no not-found OperationOutcome for %s in the error files %+v", want, m.Error)
}

func TestKickoffRejections(t *testing.T) {
	s := startServer(t, dataDir)
	b := s.base
	cases := []struct {
		name   string
		method string
		url    string
		header http.Header
		body   string
		status int
		want   string
	}{
		{"unknown type", "GET", b + "/$export?_type=NotAType", kickHeaders(), "", 400, "NotAType"},
		{"malformed since", "GET", b + "/$export?_since=garbage", kickHeaders(), "", 400, "_since"},
		{"future since", "GET", b + "/$export?_since=2057-01-01T00:00:00%2B05:00", kickHeaders(), "", 400, "future"},
		{"csv", "GET", b + "/$export?_outputFormat=text/csv", kickHeaders(), "", 400, "_outputFormat"},
		{"xml", "POST", b + "/$export", kickHeaders("Content-Type", "application/fhir+json"), `{"resourceType":"Parameters","parameter":[{"name":"_outputFormat","valueString":"application/xml"}]}`, 400, "_outputFormat"},
		{"patient at system", "GET", b + "/$export?patient=Patient/1", kickHeaders(), "", 400, "patient"},
		{"patient in GET", "GET", b + "/Patient/$export?patient=Patient/1", kickHeaders(), "", 400, "POST"},
		{"only non-compartment types", "GET", b + "/Patient/$export?_type=Organization", kickHeaders(), "", 400, "Organization"},
		{"typeFilter modifier not supported", "GET", b + "/$export?_typeFilter=Observation%3Fcode%3Ain%3Dhttp%3A%2F%2Fx%2Fvs", kickHeaders(), "", 400, "code:in"},
		{"typeFilter unknown parameter", "GET", b + "/$export?_typeFilter=Patient%3Fcolour%3Dred", kickHeaders(), "", 400, "colour"},
		{"typeFilter bad date", "GET", b + "/$export?_typeFilter=Patient%3Fbirthdate%3Dlt19x", kickHeaders(), "", 400, "birthdate"},
		{"includeAssociatedData unknown", "GET", b + "/$export?includeAssociatedData=Everything", kickHeaders(), "", 400, "includeAssociatedData"},
		{"includeAssociatedData unsupported", "GET", b + "/$export?includeAssociatedData=LatestProvenanceResources", kickHeaders(), "", 400, "LatestProvenanceResources"},
		{"unknown parameter", "GET", b + "/$export?_foo=1", kickHeaders(), "", 400, "_foo"},
		{"nested elements", "GET", b + "/$export?_elements=Patient.name.given", kickHeaders(), "", 400, "_elements"},
		{"unknown group", "GET", b + "/Group/does-not-exist/$export", kickHeaders(), "", 404, "does-not-exist"},
		{"no accept", "GET", b + "/$export", http.Header{"Prefer": {"respond-async"}}, "", 400, "Accept"},
		{"no prefer", "GET", b + "/$export", http.Header{"Accept": {"application/fhir+json"}}, "", 400, "respond-async"},
		{"POST not json", "POST", b + "/$export", kickHeaders("Content-Type", "application/fhir+json"), `{not json`, 400, "Parameters"},
		{"POST wrong media type", "POST", b + "/$export", kickHeaders("Content-Type", "text/plain"), `x`, 415, "Content-Type"},
		{"PUT", "PUT", b + "/$export", kickHeaders(), "", 405, "GET, POST"},
		{"unknown path", "GET", b + "/Nope/$export", kickHeaders(), "", 404, ""},
		{"huge body", "POST", b + "/$export", kickHeaders("Content-Type", "application/fhir+json"), `{"resourceType":"Parameters","x":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "body"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			requireOutcome(t, do(t, tc.method, tc.url, tc.header, tc.body), tc.status, tc.want)
		})
	}
}

func TestKickoffVariantsAccepted(t *testing.T) {
	s := startServer(t, dataDir)
	for _, q := range []string{
		"_outputFormat=application%2Ffhir%2Bndjson", "_outputFormat=application%2Fndjson", "_outputFormat=ndjson",
		"_type=Patient&_type=Condition", "_type=Patient,%20Condition",
	} {
		t.Run(q, func(t *testing.T) {
			m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?"+q, kickHeaders(), ""), nil)
			if strings.Contains(q, "_type") {
				var types []string
				for _, o := range m.Output {
					types = append(types, o.Type)
				}
				sort.Strings(types)
				if strings.Join(types, ",") != "Condition,Patient" {
					t.Errorf("output types = %v", types)
				}
			}
		})
	}
	// K-06/K-07: Prefer as a list, lenient handling reports the
	// parameters it dropped in error files; it drops only what cannot
	// widen the export.
	loc := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient,NotAType&organizeOutputBy=Encounter",
		http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async, handling=lenient"}}, "")
	m := waitManifest(t, loc, nil)
	if len(m.Output) != 1 || m.Output[0].Type != "Patient" {
		t.Errorf("lenient output = %+v", m.Output)
	}
	if len(m.Error) != 1 || m.Error[0].Type != "OperationOutcome" {
		t.Fatalf("lenient error files = %+v", m.Error)
	}
	r := do(t, http.MethodGet, m.Error[0].URL, nil, "")
	lines := strings.Split(strings.TrimSpace(string(r.body)), "\n")
	if len(lines) != 2 || !strings.Contains(string(r.body), "NotAType") || !strings.Contains(string(r.body), "organizeOutputBy") {
		t.Errorf("error file = %s", r.body)
	}
	for _, l := range lines {
		var oo map[string]any
		if json.Unmarshal([]byte(l), &oo) != nil || oo["resourceType"] != "OperationOutcome" {
			t.Errorf("error line is not an OperationOutcome: %s", l)
		}
	}
}

func TestElementsSubsetting(t *testing.T) {
	s := startServer(t, dataDir)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient,Observation&_elements=Patient.gender,status", kickHeaders(), ""), nil)
	for k, line := range download(t, m) {
		var r map[string]json.RawMessage
		json.Unmarshal(line, &r)
		keys := []string{}
		for key := range r {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		want := "gender,id,meta,resourceType"
		if strings.HasPrefix(k, "Observation/") {
			want = "code,id,meta,resourceType,status" // code is mandatory
		}
		if strings.Join(keys, ",") != want {
			t.Fatalf("%s keys = %v, want %s", k, keys, want)
		}
		if !strings.Contains(string(r["meta"]), `"code":"SUBSETTED"`) {
			t.Fatalf("%s meta = %s, want the SUBSETTED tag", k, r["meta"])
		}
	}
}

func TestStatusAndCancel(t *testing.T) {
	s := startServer(t, dataDir, "--chunk-budget", "1ms", "--max-file-bytes", "20000", "--unit-workers", "1")
	loc := kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	r := do(t, http.MethodGet, loc, http.Header{"Accept": {"application/json"}}, "")
	if r.status != http.StatusAccepted && r.status != http.StatusOK {
		t.Fatalf("first poll = %d", r.status)
	}
	// X-01..X-03: DELETE → 202, then 404 with an OperationOutcome for GET and DELETE.
	if d := do(t, http.MethodDelete, loc, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", d.status, d.body)
	}
	requireOutcome(t, do(t, http.MethodGet, loc, nil, ""), 404, "")
	requireOutcome(t, do(t, http.MethodDelete, loc, nil, ""), 404, "")
	requireOutcome(t, do(t, http.MethodGet, s.base+"/bulkstatus/0123456789abcdef", nil, ""), 404, "")
	// The cancelled job leaves no files behind (a chunk in flight when the
	// cancel landed removes what it wrote).
	var entries []string
	if !waitfor.Condition(10*time.Second, 20*time.Millisecond, func() bool {
		entries, _ = filepath.Glob(filepath.Join(s.state, "files", "*", "*"))
		return len(entries) == 0
	}) {
		t.Errorf("files left after cancel: %v", entries)
	}

	// DELETE after completion removes the files too (F-03: 404).
	loc = kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	m := waitManifest(t, loc, nil)
	if d := do(t, http.MethodDelete, loc, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d", d.status)
	}
	if r := do(t, http.MethodGet, m.Output[0].URL, nil, ""); r.status != 404 {
		t.Errorf("file after DELETE = %d, want 404", r.status)
	}
}

func TestFileDownloads(t *testing.T) {
	s := startServer(t, dataDir)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""), nil)
	url := m.Output[0].URL
	plain := do(t, http.MethodGet, url, nil, "")
	if plain.status != 200 || plain.header.Get("Content-Encoding") != "" {
		t.Fatalf("plain download = %d, encoding %q", plain.status, plain.header.Get("Content-Encoding"))
	}
	gz := do(t, http.MethodGet, url, http.Header{"Accept-Encoding": {"gzip"}}, "")
	if gz.header.Get("Content-Encoding") != "gzip" || gz.header.Get("Content-Type") != "application/fhir+ndjson" {
		t.Fatalf("gzip download headers = %v", gz.header)
	}
	if string(gunzip(t, gz.body)) != string(plain.body) {
		t.Errorf("gzip body differs from the plain body")
	}
	tampered := strings.Replace(url, "sig=", "sig=00", 1)
	if r := do(t, http.MethodGet, tampered, nil, ""); r.status != 403 {
		t.Errorf("tampered link = %d, want 403", r.status)
	}
	otherFile := strings.Replace(url, "Patient.0000.ndjson", "Patient.0001.ndjson", 1)
	if r := do(t, http.MethodGet, otherFile, nil, ""); r.status != 403 {
		t.Errorf("link for another key = %d, want 403", r.status)
	}
	for _, p := range []string{"/bulkfiles/../jobs.db?exp=9999999999&sig=00", "/bulkfiles/%2e%2e/link-secret?exp=1&sig=00"} {
		if r := do(t, http.MethodGet, s.base+p, nil, ""); r.status != 403 && r.status != 404 {
			t.Errorf("traversal %s = %d", p, r.status)
		}
	}
}

func TestAuthAndOwnership(t *testing.T) {
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("# token client\nalpha-token client-a\nbeta-token client-b\n"), 0o600)
	s := startServer(t, dataDir, "--tokens", tokens)
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), 401, "")
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export", kickHeaders("Authorization", "Bearer wrong"), ""), 401, "")
	loc := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders("Authorization", "Bearer alpha-token"), "")
	requireOutcome(t, do(t, http.MethodGet, loc, nil, ""), 401, "")
	requireOutcome(t, do(t, http.MethodGet, loc, http.Header{"Authorization": {"Bearer beta-token"}}, ""), 404, "")
	requireOutcome(t, do(t, http.MethodDelete, loc, http.Header{"Authorization": {"Bearer beta-token"}}, ""), 404, "")
	m := waitManifest(t, loc, http.Header{"Authorization": {"Bearer alpha-token"}})
	if len(m.Output) != 1 {
		t.Errorf("owner's manifest = %+v", m)
	}
}

func TestMetadataAndGroups(t *testing.T) {
	s := startServer(t, dataDir)
	r := do(t, http.MethodGet, s.base+"/metadata", nil, "")
	var cs struct {
		ResourceType string   `json:"resourceType"`
		Instantiates []string `json:"instantiates"`
		Rest         []struct {
			Operation []struct{ Name, Definition string } `json:"operation"`
			Resource  []struct {
				Type      string                              `json:"type"`
				Operation []struct{ Name, Definition string } `json:"operation"`
			} `json:"resource"`
		} `json:"rest"`
	}
	if err := json.Unmarshal(r.body, &cs); err != nil || cs.ResourceType != "CapabilityStatement" {
		t.Fatalf("metadata: %v %s", err, r.body)
	}
	if len(cs.Instantiates) == 0 || cs.Instantiates[0] != "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" {
		t.Errorf("instantiates = %v", cs.Instantiates)
	}
	ops := map[string]string{}
	for _, o := range cs.Rest[0].Operation {
		ops["system"] = o.Definition
	}
	types := map[string]bool{}
	for _, res := range cs.Rest[0].Resource {
		types[res.Type] = true
		for _, o := range res.Operation {
			ops[res.Type] = o.Definition
		}
	}
	for k, want := range map[string]string{"system": "export", "Patient": "patient-export", "Group": "group-export"} {
		if ops[k] != "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"+want {
			t.Errorf("%s operation = %q", k, ops[k])
		}
	}
	if !types["Observation"] || !types["Practitioner"] {
		t.Errorf("exportable types missing from the CapabilityStatement: %v", types)
	}
	// GR-01: read and search Groups.
	g := do(t, http.MethodGet, s.base+"/Group/small-cohort", nil, "")
	if g.status != 200 || g.json(t)["id"] != "small-cohort" {
		t.Errorf("Group read = %d %s", g.status, g.body)
	}
	requireOutcome(t, do(t, http.MethodGet, s.base+"/Group/nope", nil, ""), 404, "")
	b := do(t, http.MethodGet, s.base+"/Group?identifier=https://bulkfhir.example/groups|care-team-a", nil, "")
	bundle := b.json(t)
	if bundle["type"] != "searchset" || fmt.Sprint(bundle["total"]) != "1" {
		t.Errorf("Group search = %s", b.body)
	}
}

func TestSeparateExportStatus(t *testing.T) {
	s := startServer(t, dataDir)
	r := do(t, http.MethodGet, s.base+"/$export?_type=Patient", http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async, separate-export-status"}}, "")
	if r.status != 202 || r.header.Get("Preference-Applied") != "respond-async, separate-export-status" {
		t.Fatalf("kick-off = %d, Preference-Applied %q", r.status, r.header.Get("Preference-Applied"))
	}
	loc := r.header.Get("Content-Location")
	completed := waitfor.Condition(time.Minute, 50*time.Millisecond, func() bool {
		p := do(t, http.MethodGet, loc, nil, "")
		if p.status != 200 {
			t.Fatalf("poll = %d, want 200 with X-Export-Status", p.status)
		}
		if p.header.Get("X-Export-Status") == "200 OK" {
			return true
		}
		if p.header.Get("X-Export-Status") != "202 Accepted" {
			t.Fatalf("X-Export-Status = %q", p.header.Get("X-Export-Status"))
		}
		return false
	})
	if !completed {
		t.Fatal("never completed")
	}
}

func TestConcurrentExportsAgree(t *testing.T) {
	s := startServer(t, dataDir)
	const n = 16
	results := make([]map[string][]byte, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := do(t, http.MethodGet, s.base+"/Group/even-cohort/$export", kickHeaders(), "")
			if r.status == http.StatusTooManyRequests {
				if r.header.Get("Retry-After") == "" {
					t.Errorf("429 without Retry-After")
				}
				return
			}
			if r.status != 202 {
				t.Errorf("kick-off %d = %d", i, r.status)
				return
			}
			results[i] = download(t, waitManifest(t, r.header.Get("Content-Location"), nil))
		}(i)
	}
	wg.Wait()
	var first map[string][]byte
	for i, r := range results {
		if r == nil {
			continue
		}
		if first == nil {
			first = r
			continue
		}
		if len(r) != len(first) {
			t.Errorf("export %d returned %d resources, another %d", i, len(r), len(first))
		}
		for k := range first {
			if _, ok := r[k]; !ok {
				t.Errorf("export %d lacks %s", i, k)
				break
			}
		}
	}
	if first == nil {
		t.Fatal("no export completed")
	}
}

func TestRestartMidExportFinishesCleanly(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if out, err := execGenerate(data, 150); err != nil {
		t.Fatalf("generate: %v %s", err, out)
	}
	s := startServer(t, data, "--chunk-budget", "1ms", "--max-file-bytes", "30000", "--unit-workers", "1")
	loc := kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	// Kill the server once the export has written resources, not after a
	// guessed time.
	exporting := regexp.MustCompile(`^exporting: \d+/\d+ units done, [1-9]\d* resources`)
	waitfor.Condition(time.Minute, 10*time.Millisecond, func() bool {
		r := do(t, http.MethodGet, loc, nil, "")
		return r.status != http.StatusAccepted || exporting.MatchString(r.header.Get("X-Progress"))
	})
	s.kill()
	s.start() // same state directory and port
	r := waitDone(t, loc, nil)
	if !strings.Contains(s.log.String(), "resuming job") {
		t.Errorf("the export was not in flight at the restart; the test proves nothing:\n%s", s.log)
	}
	// The resumed job must complete: a failed one (an OperationOutcome)
	// fails the test.
	if r.status != http.StatusOK {
		t.Fatalf("after the restart the job ended %d, want 200 with the manifest: %s", r.status, r.body)
	}
	var m manifest
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	sameSet(t, download(t, m), sourceResources(t, data))
	// A completed job and its files are still served after a restart.
	s.stop()
	s.start()
	m2 := waitManifest(t, loc, nil)
	if len(m2.Output) != len(m.Output) {
		t.Fatalf("after a second restart the manifest has %d files, before %d", len(m2.Output), len(m.Output))
	}
	if r := do(t, http.MethodGet, m.Output[0].URL, nil, ""); r.status != 200 {
		t.Errorf("a link from before the restart = %d, want 200", r.status)
	}
}

func TestTooManyExportsGet429UntilOneEnds(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if out, err := execGenerate(data, 150); err != nil {
		t.Fatalf("generate: %v %s", err, out)
	}
	s := startServer(t, data, "--max-live-jobs", "1", "--chunk-budget", "1ms", "--max-file-bytes", "20000", "--unit-workers", "1")
	first := kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	r := do(t, http.MethodGet, s.base+"/$export", kickHeaders(), "")
	requireOutcome(t, r, http.StatusTooManyRequests, "")
	if r.header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After")
	}
	// cancelling frees the slot at once (no stale lock).
	if d := do(t, http.MethodDelete, first, nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d", d.status)
	}
	kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
}

func TestRetentionExpiresJobsAndLinks(t *testing.T) {
	s := startServer(t, dataDir, "--retention", "1s")
	loc := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
	m := waitManifest(t, loc, nil)
	if r := do(t, http.MethodGet, m.Output[0].URL, nil, ""); r.status != 200 {
		t.Fatalf("download before expiry = %d", r.status)
	}
	// A test about time: the job and its links expire 1 s after completion
	// (the links at a whole second); wait until both say so, then check.
	waitfor.Condition(10*time.Second, 100*time.Millisecond, func() bool {
		return do(t, http.MethodGet, loc, nil, "").status == http.StatusNotFound &&
			do(t, http.MethodGet, m.Output[0].URL, nil, "").status == http.StatusNotFound
	})
	requireOutcome(t, do(t, http.MethodGet, loc, nil, ""), 404, "")
	if r := do(t, http.MethodGet, m.Output[0].URL, nil, ""); r.status != 404 {
		t.Errorf("download after expiry = %d, want 404", r.status)
	}
}
