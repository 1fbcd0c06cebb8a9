package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os/exec"
	"strings"
	"testing"
)

// auditLines stops the server and returns its audit log lines.
func auditLines(t *testing.T, s *server) []map[string]any {
	t.Helper()
	s.stop()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.log.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "audit" {
			out = append(out, m)
		}
	}
	return out
}

// TestRedirectDownloads: with --downloads redirect the manifest links to
// the API and needs the token; the owner's token downloads (streamed),
// no token is 401, another client's 404, scopes that do not cover the
// file's type 403; bulkfhir export works; every step is one audit line.
func TestRedirectDownloads(t *testing.T) {
	clients, keys := smartClients(t)
	s := startServer(t, dataDir, "--clients", clients, "--downloads", "redirect")
	es := login(t, s, keys["es"], "es", "system/*.read")
	rs := login(t, s, keys["rs"], "rs", "system/*.rs")
	esPatients := login(t, s, keys["es"], "es", "system/Patient.read")

	status := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient,Observation", kickHeaders("Authorization", "Bearer "+es), "")
	m := waitManifest(t, status, bearer(es))
	if !m.RequiresAccessToken {
		t.Fatal("redirect mode manifest says requiresAccessToken false")
	}
	files := map[string]string{}
	for _, o := range m.Output {
		if !strings.HasPrefix(o.URL, s.base+"/bulkfiles/") || strings.Contains(o.URL, "?") {
			t.Fatalf("output url %q: want a plain [base]/bulkfiles/ link", o.URL)
		}
		files[o.Type] = o.URL
	}
	if files["Patient"] == "" || files["Observation"] == "" {
		t.Fatalf("manifest lacks Patient or Observation: %+v", m.Output)
	}
	for _, tc := range []struct {
		name   string
		url    string
		header http.Header
		want   int
	}{
		{"owner", files["Observation"], bearer(es), 200},
		{"no token", files["Observation"], nil, 401},
		{"other client", files["Observation"], bearer(rs), 404},
		{"scopes without the type", files["Observation"], bearer(esPatients), 403},
		{"scopes with the type", files["Patient"], bearer(esPatients), 200},
		{"a key outside the job", s.base + "/bulkfiles/" + strings.Repeat("0", 32) + "/Patient.0000.ndjson", bearer(es), 404},
		{"the signed link of signed mode is no way round", files["Observation"] + "?exp=9999999999&sig=00", nil, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodGet, tc.url, tc.header, "")
			if tc.want != 200 {
				requireOutcome(t, r, tc.want, "")
				return
			}
			if r.status != 200 || r.header.Get("Content-Type") != "application/fhir+ndjson" || len(r.body) == 0 {
				t.Fatalf("GET = %d %q, %d bytes", r.status, r.header.Get("Content-Type"), len(r.body))
			}
		})
	}
	// The client follows requiresAccessToken and sends its token.
	out := t.TempDir()
	cmd := exec.Command(binPath, "export", "--server", s.base, "--client-id", "es", "--key", keys["es"], "--out", out, "--type", "Patient,Observation")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("export: %v\n%s\nserver: %s", err, b, s.log)
	}
	if got := sourceResources(t, out); len(got) == 0 {
		t.Fatal("bulkfhir export downloaded nothing")
	}

	// One audit line per download, with client, job, file, bytes, outcome.
	var downloads, denied int
	for _, a := range auditLines(t, s) {
		if a["event"] != "download" {
			continue
		}
		switch a["outcome"] {
		case 200.0:
			downloads++
			if a["client"] != "es" || a["job"] == "" || !strings.Contains(a["file"].(string), "/") || a["bytes"].(float64) <= 0 {
				t.Errorf("download audit line %v", a)
			}
		case 401.0, 403.0, 404.0:
			denied++
		}
	}
	if downloads < 2 || denied < 4 {
		t.Errorf("audit: %d downloads, %d refusals logged; want ≥ 2 and ≥ 4", downloads, denied)
	}
}
