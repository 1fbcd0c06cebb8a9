package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// fetchAs downloads url as one kind of client and returns the NDJSON it
// reads and the Content-Encoding it was sent. "bulk-data-client" sends
// what SMART's bulk-data-client sends (accept-encoding: gzip, deflate, br,
// identity; it decompresses by Content-Encoding itself); "plain" sends no
// Accept-Encoding at all (and decodes what HTTP says it was sent).
func fetchAs(t *testing.T, client, url string, header http.Header) ([]byte, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if client == "bulk-data-client" {
		req.Header.Set("Accept-Encoding", "gzip, deflate, br, identity")
	}
	// DisableCompression: the transport adds no Accept-Encoding of its
	// own and decodes nothing.
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: GET %s = %d %s", client, url, resp.StatusCode, body)
	}
	enc := resp.Header.Get("Content-Encoding")
	if enc == "gzip" {
		body = gunzip(t, body)
	}
	return body, enc
}

// TestCompressedDownloads: files are stored gzip-compressed; a client
// sending Accept-Encoding gzip (as SMART's bulk-data-client does) gets the
// compressed bytes, one sending none gets plain NDJSON, both the same
// lines; bulkfhir export and verify work on them.
func TestCompressedDownloads(t *testing.T) {
	s := startServer(t, dataDir)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""), nil)
	if len(m.Output) == 0 {
		t.Fatal("no output")
	}
	for _, o := range m.Output {
		gz, encGz := fetchAs(t, "bulk-data-client", o.URL, nil)
		plain, encPlain := fetchAs(t, "plain", o.URL, nil)
		if encGz != "gzip" || encPlain != "" {
			t.Fatalf("%s: Content-Encoding %q to bulk-data-client, %q to a client without Accept-Encoding; want gzip and none", o.Type, encGz, encPlain)
		}
		if !bytes.Equal(gz, plain) || int64(bytes.Count(plain, []byte("\n"))) != *o.Count {
			t.Fatalf("%s: gzip download %d bytes, plain %d, count %d", o.Type, len(gz), len(plain), *o.Count)
		}
		if o.FileSize != nil && *o.FileSize != int64(len(plain)) {
			t.Errorf("%s: fileSize %d, plain file %d bytes", o.Type, *o.FileSize, len(plain))
		}
	}
	// On disk the NDJSON files are gzip streams, far smaller than the data.
	var stored, plainBytes int64
	filepath.WalkDir(filepath.Join(s.state, "files"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ndjson") {
			b, _ := os.ReadFile(p)
			if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
				t.Errorf("%s is not stored compressed", p)
			}
			stored += int64(len(b))
		}
		return nil
	})
	for _, o := range m.Output {
		plainBytes += *o.FileSize
	}
	if stored == 0 || stored*4 > plainBytes {
		t.Errorf("stored %d bytes for %d of NDJSON", stored, plainBytes)
	}
	out := t.TempDir()
	if b, err := exec.Command(binPath, "export", "--server", s.base, "--out", out).CombinedOutput(); err != nil {
		t.Fatalf("export: %v\n%s", err, b)
	}
	sameSet(t, sourceResources(t, out), sourceResources(t, dataDir))
	if b, err := exec.Command(binPath, "verify", "--out", out, "--data", dataDir).CombinedOutput(); err != nil {
		t.Fatalf("verify: %v\n%s", err, b)
	}
}
