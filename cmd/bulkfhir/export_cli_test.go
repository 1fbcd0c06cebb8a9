package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// runCLI runs the built binary and returns its stdout, stderr and status.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, nil, args...)
}

func runCLIEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(append(os.Environ(), "BULKFHIR_TOKEN="), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// mustExport runs bulkfhir export and fails on a non-zero status.
func mustExport(t *testing.T, args ...string) string {
	t.Helper()
	stdout, stderr, code := runCLI(t, append([]string{"export"}, args...)...)
	if code != 0 {
		t.Fatalf("bulkfhir export %v: status %d\n%s%s", args, code, stdout, stderr)
	}
	return stdout
}

func TestCLIConventions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		stdout  string // must contain
		stderr  string // must contain; "" for an empty stderr
		oneLine bool   // stderr is exactly one line
	}{
		{"top-level -h", []string{"-h"}, 0, "commands:", "", false},
		{"export -h", []string{"export", "-h"}, 0, "examples:", "", false},
		{"help export", []string{"help", "export"}, 0, "--since-file", "", false},
		{"help export lists exit codes", []string{"help", "export"}, 0, "130 interrupted", "", false},
		{"verify -h", []string{"verify", "-h"}, 0, "bulkfhir verify --out out --data data", "", false},
		{"serve -h", []string{"serve", "-h"}, 0, "--state", "", false},
		{"version", []string{"version"}, 0, "bulkfhir ", "", false},
		{"unknown command", []string{"frobnicate"}, 2, "", "unknown command", true},
		{"unknown flag", []string{"export", "--frobnicate"}, 2, "", "-frobnicate", true},
		{"no arguments", nil, 2, "", "usage:", false},
		{"bad --output", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--output", "yaml"}, 2, "", "--output", true},
		{"group contradicts level", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--group", "g", "--level", "patient"}, 2, "", "contradicts --level patient", true},
		{"patient contradicts system", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--patient", "p", "--level", "system"}, 2, "", "contradicts --level system", true},
		{"patient contradicts GET", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--patient", "p", "--post=false"}, 2, "", "--post=false", true},
		{"level group without group", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--level", "group"}, 2, "", "--group", true},
		{"since and since-file", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--since", "2026-01-01T00:00:00Z", "--since-file", "x"}, 2, "", "--since-file", true},
		{"bad since", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--since", "yesterday"}, 2, "", "FHIR instant", true},
		{"bad until", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--until", "2026-13-01"}, 2, "", "--until", true},
		{"organized by another type", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--organize-output-by", "Encounter"}, 2, "", "only Patient", true},
		{"organized with --status", []string{"export", "--status", "http://127.0.0.1:1/fhir/bulkstatus/x", "--organize-output-by", "Patient"}, 2, "", "--status polls", true},
		{"resume and force", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--resume", "--force"}, 2, "", "contradict", true},
		{"status with kick-off flags", []string{"export", "--status", "http://127.0.0.1:1/status/1", "--type", "Patient"}, 2, "", "--status", true},
		{"no server", []string{"export"}, 2, "", "--server is required", true},
		{"status without URL", []string{"status"}, 2, "", "one status URL", true},
		{"unreachable server", []string{"export", "--server", "http://127.0.0.1:1/fhir", "--out", "@TMP"}, 1, "", "unreachable", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			for i, a := range args {
				if a == "@TMP" {
					args = append([]string(nil), args...)
					args[i] = t.TempDir()
				}
			}
			stdout, stderr, code := runCLIEnv(t, []string{"BULKFHIR_TOKEN=s3cr3t-token", "BULKFHIR_SOURCE_TOKEN=upstr3am-token"}, args...)
			for _, secret := range []string{"s3cr3t-token", "upstr3am-token"} {
				if strings.Contains(stdout+stderr, secret) {
					t.Errorf("a token from the environment (%s) is printed:\n%s%s", secret, stdout, stderr)
				}
			}
			if code != tc.code {
				t.Errorf("status %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout does not contain %q:\n%s", tc.stdout, stdout)
			}
			if tc.stderr == "" && stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr does not contain %q:\n%s", tc.stderr, stderr)
			}
			if tc.oneLine && strings.Count(strings.TrimRight(stderr, "\n"), "\n") != 0 {
				t.Errorf("stderr is not one line:\n%s", stderr)
			}
			if strings.Contains(stderr, "flag: help requested") {
				t.Errorf("stderr leaks the flag package's help error:\n%s", stderr)
			}
		})
	}
}

// TestLevelFromFlags: --group alone is a Group export and --patient alone a
// Patient-level POST export, exactly the group's and the patient's
// resources (the defect: both exported all patients).
func TestLevelFromFlags(t *testing.T) {
	s := startServer(t, dataDir)
	src := sourceResources(t, dataDir)
	members := groupMembers(t, src, "small-cohort")
	var one string
	for id := range members {
		one = id
		break
	}
	tests := []struct {
		name string
		args []string
		want map[string][]byte
	}{
		{"group", []string{"--group", "small-cohort"}, expectedCompartment(src, members)},
		{"patient", []string{"--patient", one}, expectedCompartment(src, map[string]bool{one: true})},
		{"group and patient", []string{"--group", "small-cohort", "--patient", one}, expectedCompartment(src, map[string]bool{one: true})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			mustExport(t, append([]string{"--server", s.base, "--out", out}, tc.args...)...)
			got := sourceResources(t, out)
			if len(got) >= len(src)/2 {
				t.Fatalf("exported %d of the source's %d resources: the level was not implied", len(got), len(src))
			}
			sameSet(t, got, tc.want)
			if stdout, stderr, code := runCLI(t, "verify", "--out", out, "--data", dataDir); code != 0 {
				t.Errorf("verify of the %s export: status %d\n%s%s", tc.name, code, stdout, stderr)
			}
		})
	}
}

// TestDroppedFilterStopsTheRun: under --lenient a server may drop a
// _typeFilter it cannot apply. With --type-filter, --strict-filters is on:
// the run stops right after kick-off, cancels the export and downloads
// nothing; with --strict-filters=false the drop is reported before the
// downloads start.
func TestDroppedFilterStopsTheRun(t *testing.T) {
	s := startServer(t, dataDir)
	filter := "Observation?no-such-search-parameter=1"
	out := t.TempDir()
	stdout, stderr, code := runCLI(t, "export", "--server", s.base, "--out", out, "--type", "Observation,Patient", "--type-filter", filter, "--lenient")
	if code == 0 {
		t.Fatalf("a dropped _typeFilter did not stop the run:\n%s%s", stdout, stderr)
	}
	if !strings.Contains(stderr, "_typeFilter") {
		t.Errorf("the error does not name the dropped _typeFilter:\n%s", stderr)
	}
	if files, _ := filepath.Glob(filepath.Join(out, "*.ndjson")); len(files) > 0 {
		t.Errorf("files were downloaded from an export wider than asked: %v", files)
	}
	if _, url, ok := strings.Cut(stderr, "export started: "); ok {
		url, _, _ = strings.Cut(url, "\n")
		if _, st, code := runCLI(t, "status", strings.TrimSpace(url)); code != 1 || !strings.Contains(st, "404") {
			t.Errorf("the export was not cancelled on the server: status says %d %q", code, st)
		}
	} else if code == 1 && !strings.Contains(stderr, "400 Bad Request") {
		// (bulkfhir serve refuses a filter it cannot apply even under
		// lenient handling, issue 18: a 400, nothing started.)
		t.Errorf("the server accepted the export, but the client named no status URL:\n%s", stderr)
	}

	out = t.TempDir()
	stdout, stderr, code = runCLI(t, "export", "--server", s.base, "--out", out, "--type", "Patient", "--type-filter", filter, "--lenient", "--strict-filters=false")
	if code != 0 {
		t.Skipf("the server refused the dropped filter outright (status %d): nothing to report later\n%s", code, stderr)
	}
	dropped := strings.Index(stderr, "dropped a parameter")
	downloading := strings.Index(stderr, "downloading")
	if dropped < 0 || downloading < 0 || dropped > downloading {
		t.Errorf("the dropped parameter is not reported before the downloads:\n%s", stderr)
	}
	_ = stdout
}

// TestOutputFolder: a folder holding an export is refused, --resume
// checks the request, --force replaces the export (and its stale files),
// and verify catches a folder that does not match its manifest.
func TestOutputFolder(t *testing.T) {
	s := startServer(t, dataDir)
	out := t.TempDir()
	mustExport(t, "--server", s.base, "--out", out, "--type", "Patient,Condition")

	_, stderr, code := runCLI(t, "export", "--server", s.base, "--out", out, "--type", "Patient")
	if code != 2 || !strings.Contains(stderr, "--force") {
		t.Errorf("a second export into the folder: status %d, %q; want 2 and a hint", code, stderr)
	}
	_, stderr, code = runCLI(t, "export", "--server", s.base, "--out", out, "--type", "Patient", "--resume")
	if code != 2 || !strings.Contains(stderr, `"type":["Condition","Patient"]`) {
		t.Errorf("--resume with other flags: status %d, %q; want 2 naming the recorded request", code, stderr)
	}
	stdout := mustExport(t, "--server", s.base, "--out", out, "--type", "Condition", "--type", "Patient", "--resume")
	if !strings.Contains(stdout, "files already complete were kept") {
		t.Errorf("--resume of a complete export kept nothing:\n%s", stdout)
	}
	if stdout, stderr, code := runCLI(t, "verify", "--out", out); code != 0 {
		t.Fatalf("verify: status %d\n%s%s", code, stdout, stderr)
	}

	// A stale file from another export, and a file with a line removed.
	stale := filepath.Join(out, "Observation.1.ndjson")
	os.WriteFile(stale, []byte(`{"resourceType":"Observation","id":"old"}`+"\n"), 0o644)
	stdout, _, code = runCLI(t, "verify", "--out", out)
	if code == 0 || !strings.Contains(stdout, "Observation.1.ndjson: not in the manifest") {
		t.Errorf("verify passed a folder with a stale file: status %d\n%s", code, stdout)
	}
	os.Remove(stale)
	cond := filepath.Join(out, "Condition.1.ndjson")
	b, _ := os.ReadFile(cond)
	os.WriteFile(cond, b[bytes.IndexByte(b, '\n')+1:], 0o644)
	stdout, _, code = runCLI(t, "verify", "--out", out)
	if code == 0 || !strings.Contains(stdout, "the manifest says") {
		t.Errorf("verify passed a file with a resource missing: status %d\n%s", code, stdout)
	}
	os.WriteFile(stale, []byte(`{"resourceType":"Observation","id":"old"}`+"\n"), 0o644)

	// --force replaces the export: the stale file goes, the new one is whole.
	mustExport(t, "--server", s.base, "--out", out, "--type", "Patient", "--force")
	if _, err := os.Stat(stale); err == nil {
		t.Errorf("--force kept a file of the old export")
	}
	if stdout, stderr, code := runCLI(t, "verify", "--out", out, "--data", dataDir); code != 0 {
		t.Errorf("verify after --force: status %d\n%s%s", code, stdout, stderr)
	}
}

// TestVerifyHonoursTheRequest: verify --data compares a filtered export
// with what its recorded request selects from the source, and fails when
// the export is not what the request asked for.
func TestVerifyHonoursTheRequest(t *testing.T) {
	s := startServer(t, dataDir)
	out := t.TempDir()
	since := "2025-07-01T00:00:00Z"
	mustExport(t, "--server", s.base, "--out", out, "--type", "Condition,Observation", "--since", since, "--group", "even-cohort")
	stdout, stderr, code := runCLI(t, "verify", "--out", out, "--data", dataDir)
	if code != 0 {
		t.Fatalf("verify of a filtered export: status %d\n%s%s", code, stdout, stderr)
	}
	// Negative control: the same files under a record that says the
	// request had no _since must fail.
	rec := filepath.Join(out, ".bulkfhir-export.json")
	b, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	delete(m["request"].(map[string]any), "since")
	b, _ = json.Marshal(m)
	os.WriteFile(rec, b, 0o600)
	stdout, _, code = runCLI(t, "verify", "--out", out, "--data", dataDir)
	if code == 0 || !strings.Contains(stdout, "MISMATCH") {
		t.Errorf("verify passed an export against a request it does not match: status %d\n%s", code, stdout)
	}
}

// TestJSONOutputStatusAndCancel: --output json is one JSON document a
// script can read; status and cancel work by status URL, and --status
// downloads an export started elsewhere.
func TestJSONOutputStatusAndCancel(t *testing.T) {
	s := startServer(t, dataDir)
	out := t.TempDir()
	stdout := mustExport(t, "--server", s.base, "--out", out, "--type", "Patient,Condition", "--output", "json")
	var sum struct {
		Status          string `json:"status"`
		StatusURL       string `json:"statusUrl"`
		TransactionTime string `json:"transactionTime"`
		Resources       int64  `json:"resources"`
		Bytes           int64  `json:"bytes"`
		Files           []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Count int64  `json:"count"`
		} `json:"files"`
		Errors []any `json:"errors"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("--output json is not one JSON document: %v\n%s", err, stdout)
	}
	src := sourceResources(t, dataDir)
	var want int64
	for k := range src {
		if strings.HasPrefix(k, "Patient/") || strings.HasPrefix(k, "Condition/") {
			want++
		}
	}
	var inFiles int64
	for _, f := range sum.Files {
		inFiles += f.Count
	}
	if sum.Status != "complete" || sum.Resources != want || inFiles != want || sum.Bytes == 0 || sum.TransactionTime == "" || sum.Errors == nil {
		t.Errorf("summary = %+v, want complete with %d resources", sum, want)
	}

	// status of the finished export, as text and JSON.
	stdout, stderr, code := runCLI(t, "status", sum.StatusURL)
	if code != 0 || !strings.HasPrefix(stdout, "complete:") {
		t.Errorf("status: %d %q %q", code, stdout, stderr)
	}
	stdout, _, _ = runCLI(t, "status", "--output", "json", sum.StatusURL)
	var st struct {
		Status   string `json:"status"`
		Manifest struct {
			Output []any `json:"output"`
		} `json:"manifest"`
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil || st.Status != "complete" || len(st.Manifest.Output) == 0 {
		t.Errorf("status --output json = %s (%v)", stdout, err)
	}
	// --status downloads it again elsewhere, without a new kick-off.
	again := t.TempDir()
	mustExport(t, "--status", sum.StatusURL, "--out", again)
	sameSet(t, sourceResources(t, again), sourceResources(t, out))

	// cancel, then the status URL is gone.
	stdout, stderr, code = runCLI(t, "cancel", sum.StatusURL)
	if code != 0 || !strings.Contains(stdout, "cancelled") {
		t.Errorf("cancel: %d %q %q", code, stdout, stderr)
	}
	_, stderr, code = runCLI(t, "status", sum.StatusURL)
	if code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("status after cancel: %d %q, want 1 and a 404", code, stderr)
	}
	// A failure is JSON too.
	stdout, _, code = runCLI(t, "export", "--server", s.base, "--out", t.TempDir(), "--type", "NotAType", "--output", "json")
	var failed struct{ Status, Error string }
	if code != 1 || json.Unmarshal([]byte(stdout), &failed) != nil || failed.Status != "failed" || !strings.Contains(failed.Error, "NotAType") {
		t.Errorf("failed export: status %d, stdout %q", code, stdout)
	}
}

// TestCountMismatchIsReported mirrors SMART's reference server's
// some_file_generation_failed simulation: one error file's count is wrong.
// The client keeps every file, reports the mismatch and exits 3 (completed
// with errors) instead of failing and throwing the data away.
func TestCountMismatchIsReported(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host
		switch r.URL.Path {
		case "/fhir/$export":
			w.Header().Set("Content-Location", base+"/status/1")
			w.WriteHeader(http.StatusAccepted)
		case "/status/1":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"transactionTime":"2026-01-01T00:00:00.000Z","request":"%[1]s/fhir/$export","requiresAccessToken":false,
				"output":[{"type":"Patient","url":"%[1]s/files/p","count":2}],
				"error":[{"type":"OperationOutcome","url":"%[1]s/files/e","count":100}]}`, base)
		case "/files/p":
			fmt.Fprint(w, "{\"resourceType\":\"Patient\",\"id\":\"1\"}\n{\"resourceType\":\"Patient\",\"id\":\"2\"}\n")
		case "/files/e":
			fmt.Fprint(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"failed to export 99 resources"}]}`+"\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	out := t.TempDir()
	stdout, stderr, code := runCLI(t, "export", "--server", srv.URL+"/fhir", "--out", out)
	if code != 3 {
		t.Errorf("status %d, want 3\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "manifest says 100") || !strings.Contains(stdout, "failed to export 99 resources") {
		t.Errorf("the mismatch and the server's issue are not reported:\n%s", stdout)
	}
	for _, name := range []string{"Patient.1.ndjson", "error/OperationOutcome.1.ndjson"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("%s was not kept: %v", name, err)
		}
	}
	// --output json says the same to a script.
	stdout, _, code = runCLI(t, "export", "--server", srv.URL+"/fhir", "--out", t.TempDir(), "--output", "json")
	var sum struct {
		Status          string   `json:"status"`
		CountMismatches []string `json:"countMismatches"`
	}
	if code != 3 || json.Unmarshal([]byte(stdout), &sum) != nil || sum.Status != "complete-with-errors" || len(sum.CountMismatches) != 1 {
		t.Errorf("json: status %d, %s", code, stdout)
	}
}

// TestAttachmentsFlag: --attachments fetches a DocumentReference's
// attachment from the FHIR server (with the token) into attachments/, and
// verify accepts the folder.
func TestAttachmentsFlag(t *testing.T) {
	var binaryAuth atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		base := "http://" + r.Host
		switch r.URL.Path {
		case "/fhir/$export":
			w.Header().Set("Content-Location", base+"/status/1")
			w.WriteHeader(http.StatusAccepted)
		case "/status/1":
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"transactionTime":"2026-01-01T00:00:00.000Z","request":"%[1]s/fhir/$export","requiresAccessToken":false,
				"output":[{"type":"DocumentReference","url":"%[1]s/files/d","count":1}],"error":[]}`, base)
		case "/files/d":
			fmt.Fprint(w, `{"resourceType":"DocumentReference","id":"note-1","content":[{"attachment":{"url":"Binary/b1","contentType":"text/plain"}}]}`+"\n")
		case "/fhir/Binary/b1":
			binaryAuth.Store(r.Header.Get("Authorization"))
			fmt.Fprint(w, "discharge summary")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	out := t.TempDir()
	stdout, stderr, code := runCLIEnv(t, []string{"BULKFHIR_TOKEN=tok"}, "export", "--server", srv.URL+"/fhir", "--out", out, "--attachments")
	if code != 0 {
		t.Fatalf("status %d\n%s%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(filepath.Join(out, "attachments", "DocumentReference-note-1.1.txt"))
	if err != nil || string(b) != "discharge summary" {
		t.Errorf("attachment = %q, %v", b, err)
	}
	if got, _ := binaryAuth.Load().(string); got != "Bearer tok" {
		t.Errorf("the FHIR server's Binary got Authorization %q, want the token", got)
	}
	if !strings.Contains(stdout, "1 attachments") {
		t.Errorf("the summary does not count the attachment:\n%s", stdout)
	}
	if stdout, _, code := runCLI(t, "verify", "--out", out); code != 0 {
		t.Errorf("verify of a folder with attachments: status %d\n%s", code, stdout)
	}
}
