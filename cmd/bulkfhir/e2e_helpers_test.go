package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// These tests run the real bulkfhir binary as a server and talk to it over
// HTTP, like any Bulk Data client would.

var (
	binPath string // built once in TestMain
	dataDir string // generated once in TestMain
)

const testPatients = 40

func TestMain(m *testing.M) {
	tmp, err := os.MkdirTemp("", "bulkfhir-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(tmp, "bulkfhir")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build bulkfhir: %v\n%s", err, out)
		os.Exit(1)
	}
	dataDir = filepath.Join(tmp, "data")
	if out, err := exec.Command(binPath, "generate", "--patients", strconv.Itoa(testPatients), "--seed", "7", "--out", dataDir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "generate: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

type server struct {
	t     *testing.T
	base  string // http://127.0.0.1:port/fhir
	addr  string
	cmd   *exec.Cmd
	state string
	data  string
	args  []string
	log   *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startServer runs bulkfhir serve over data with a fresh state directory.
func startServer(t *testing.T, data string, args ...string) *server {
	t.Helper()
	s := &server{t: t, addr: freeAddr(t), state: t.TempDir(), data: data, args: args}
	s.base = "http://" + s.addr + "/fhir"
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *server) start() {
	s.t.Helper()
	args := []string{"serve", "--addr", s.addr, "--state", s.state}
	if s.data != "" {
		args = append(args, "--data", s.data)
	}
	// Authorization is on by default; tests that are not about it run
	// the server open.
	if !slices.Contains(s.args, "--clients") && !slices.Contains(s.args, "--tokens") {
		args = append(args, "--allow-anonymous")
	}
	args = append(args, s.args...)
	s.cmd = exec.Command(binPath, args...)
	s.log = &bytes.Buffer{}
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	up := waitfor.Condition(20*time.Second, 50*time.Millisecond, func() bool {
		resp, err := http.Get(s.base + "/metadata")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if !up {
		s.t.Fatalf("server did not start: %s", s.log)
	}
}

func (s *server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			s.t.Errorf("server did not exit cleanly on SIGTERM: %v\n%s", err, s.log)
		}
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-done
		s.t.Errorf("server did not exit on SIGTERM")
	}
	s.cmd = nil
}

func (s *server) kill() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, r.body)
	}
	return m
}

func do(t *testing.T, method, url string, header http.Header, body string) reply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

func kickHeaders(extra ...string) http.Header {
	h := http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}}
	for i := 0; i+1 < len(extra); i += 2 {
		h[http.CanonicalHeaderKey(extra[i])] = append(h[http.CanonicalHeaderKey(extra[i])], extra[i+1])
	}
	return h
}

// requireOutcome asserts a FHIR error reply with the status and an
// OperationOutcome mentioning want.
func requireOutcome(t *testing.T, r reply, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/fhir+json") {
		t.Errorf("Content-Type = %q, want application/fhir+json", ct)
	}
	m := r.json(t)
	if m["resourceType"] != "OperationOutcome" {
		t.Fatalf("body is not an OperationOutcome: %s", r.body)
	}
	if want != "" && !strings.Contains(string(r.body), want) {
		t.Errorf("OperationOutcome does not mention %q: %s", want, r.body)
	}
}

// kickoff starts an export and returns the status URL.
func kickoff(t *testing.T, method, url string, header http.Header, body string) string {
	t.Helper()
	if body != "" && header.Get("Content-Type") == "" {
		header.Set("Content-Type", "application/fhir+json")
	}
	r := do(t, method, url, header, body)
	if r.status != http.StatusAccepted {
		t.Fatalf("kick-off %s %s = %d: %s", method, url, r.status, r.body)
	}
	loc := r.header.Get("Content-Location")
	if !strings.HasPrefix(loc, "http://") && !strings.HasPrefix(loc, "https://") {
		t.Fatalf("Content-Location %q is not absolute", loc)
	}
	return loc
}

// manifest is the protocol's manifest type.
type manifest = bulkdata.Manifest

// waitDone polls a status URL until the job is no longer running.
func waitDone(t *testing.T, statusURL string, header http.Header) reply {
	t.Helper()
	var r reply
	done := waitfor.Condition(2*time.Minute, 50*time.Millisecond, func() bool {
		r = do(t, http.MethodGet, statusURL, header, "")
		if r.status != http.StatusAccepted {
			return true
		}
		p := r.header.Get("X-Progress")
		if len(p) >= 100 {
			t.Errorf("X-Progress %q is not under 100 characters", p)
		}
		if _, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil {
			t.Errorf("Retry-After %q is not a number of seconds", r.header.Get("Retry-After"))
		}
		return false
	})
	if !done {
		t.Fatalf("export at %s did not finish", statusURL)
	}
	return r
}

func waitManifest(t *testing.T, statusURL string, header http.Header) manifest {
	t.Helper()
	r := waitDone(t, statusURL, header)
	if r.status != http.StatusOK {
		t.Fatalf("status = %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("manifest Content-Type = %q", ct)
	}
	if _, err := http.ParseTime(r.header.Get("Expires")); err != nil {
		t.Errorf("Expires %q is not an HTTP date", r.header.Get("Expires"))
	}
	for _, key := range []string{"transactionTime", "request", "requiresAccessToken", "output", "error"} {
		if _, ok := r.json(t)[key]; !ok {
			t.Errorf("manifest has no %q: %s", key, r.body)
		}
	}
	var m manifest
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// download fetches every output file, checks framing, type and count, and
// returns the lines per "Type/id".
func download(t *testing.T, m manifest) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	for _, o := range m.Output {
		if !strings.HasPrefix(o.URL, "http") {
			t.Fatalf("output url %q is not absolute", o.URL)
		}
		r := do(t, http.MethodGet, o.URL, http.Header{"Accept": {"application/fhir+ndjson"}}, "")
		if r.status != 200 {
			t.Fatalf("GET %s = %d", o.URL, r.status)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/fhir+ndjson" {
			t.Errorf("file Content-Type = %q", ct)
		}
		n := 0
		for _, line := range bytes.Split(bytes.TrimRight(r.body, "\n"), []byte("\n")) {
			var head struct {
				ResourceType string `json:"resourceType"`
				ID           string `json:"id"`
			}
			if err := json.Unmarshal(line, &head); err != nil {
				t.Fatalf("line is not JSON: %v: %.100s", err, line)
			}
			if head.ResourceType != o.Type {
				t.Fatalf("%s file holds a %s", o.Type, head.ResourceType)
			}
			key := head.ResourceType + "/" + head.ID
			if _, dup := got[key]; dup {
				t.Errorf("%s exported twice", key)
			}
			got[key] = append([]byte(nil), line...)
			n++
		}
		if o.Count == nil || *o.Count != int64(n) {
			t.Errorf("%s count = %v, file has %d lines", o.Type, o.Count, n)
		}
	}
	return got
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func execGenerate(dir string, patients int) ([]byte, error) {
	return exec.Command(binPath, "generate", "--patients", strconv.Itoa(patients), "--seed", "11", "--out", dir).CombinedOutput()
}

// Oracles shared with the AWS end-to-end tests.
var (
	sourceResources     = exporttest.ReadResources
	sameSet             = exporttest.SameSet
	expectedCompartment = exporttest.ExpectedCompartment
	groupMembers        = exporttest.GroupMembers
)

// heldUpstream is a test FHIR server over the sample data whose exports'
// page searches (_count of 100 or more) wait until open is called, so
// every job stays live; the kick-off's probes and Plan's counts are
// answered. open may be called more than once; call it (e.g. with
// t.Cleanup after startServer) before the server stops.
func heldUpstream(t *testing.T) (url string, open func()) {
	t.Helper()
	fs := fhirtest.New(fhirtest.Options{})
	if err := fs.LoadDir(dataDir); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var once sync.Once
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, _ := strconv.Atoi(r.URL.Query().Get("_count")); n >= 100 {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		fs.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return hs.URL, func() { once.Do(func() { close(release) }) }
}
