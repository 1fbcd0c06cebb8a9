package bulkclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// fakeServer is a scripted Bulk Data server for failure cases.
type fakeServer struct {
	*httptest.Server
	mu sync.Mutex
	// kickoffFailures, pollFailures: replies (status codes) sent first.
	kickoffFailures []int
	pollFailures    []int
	// pending202 is how many 202 replies precede completion; retryAfter
	// is their Retry-After value ("" for none).
	pending202 int
	retryAfter func() string
	manifest   func(base string) string
	files      map[string]string // path → body
	gzipFiles  bool
	// gzipMangle, when set, changes the compressed bytes sent for a path.
	gzipMangle func(path string, gz []byte) []byte
	kickoffs   atomic.Int32
	polls      []time.Time
	prefers    []string // each poll's Prefer header
	fileGets   map[string]int
	auth       map[string]string // path → Authorization seen
	deletes    atomic.Int32
	errorBody  string
}

func newFake(t *testing.T) *fakeServer {
	f := &fakeServer{files: map[string]string{
		"/files/Patient.ndjson":     `{"resourceType":"Patient","id":"1"}` + "\n" + `{"resourceType":"Patient","id":"2"}` + "\n",
		"/files/Observation.ndjson": `{"resourceType":"Observation","id":"o"}` + "\n",
		"/files/oo.ndjson":          `{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"processing","diagnostics":"skipped one"}]}` + "\n",
	}, fileGets: map[string]int{}, auth: map[string]string{}}
	f.manifest = func(base string) string {
		return `{"transactionTime":"2026-01-01T00:00:00Z","request":"` + base + `/$export","requiresAccessToken":false,
			"output":[{"type":"Patient","url":"` + base + `/files/Patient.ndjson","count":2},{"type":"Observation","url":"` + base + `/files/Observation.ndjson","count":1}],
			"error":[{"type":"OperationOutcome","url":"` + base + `/files/oo.ndjson"}]}`
	}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) next(list *[]int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(*list) == 0 {
		return 0
	}
	c := (*list)[0]
	*list = (*list)[1:]
	return c
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.auth[r.URL.Path] = r.Header.Get("Authorization")
	f.mu.Unlock()
	switch {
	case r.URL.Path == "/$export":
		f.kickoffs.Add(1)
		if code := f.next(&f.kickoffFailures); code != 0 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(code)
			fmt.Fprint(w, f.errorBody)
			return
		}
		w.Header().Set("Content-Location", "/status/1")
		w.WriteHeader(http.StatusAccepted)
	case r.URL.Path == "/status/1" && r.Method == http.MethodDelete:
		f.deletes.Add(1)
		w.WriteHeader(http.StatusAccepted)
	case r.URL.Path == "/status/1":
		f.mu.Lock()
		f.polls = append(f.polls, time.Now())
		f.prefers = append(f.prefers, r.Header.Get("Prefer"))
		pending := f.pending202 > 0
		if pending {
			f.pending202--
		}
		f.mu.Unlock()
		if code := f.next(&f.pollFailures); code != 0 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(code)
			return
		}
		if pending {
			if f.retryAfter != nil {
				if v := f.retryAfter(); v != "" {
					w.Header().Set("Retry-After", v)
				}
			}
			w.Header().Set("X-Progress", "working")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, f.manifest(f.URL))
	case strings.HasPrefix(r.URL.Path, "/files/"):
		f.mu.Lock()
		f.fileGets[r.URL.Path]++
		f.mu.Unlock()
		body, ok := f.files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/fhir+ndjson")
		if f.gzipFiles && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			var zb bytes.Buffer
			zw := gzip.NewWriter(&zb)
			zw.Write([]byte(body))
			zw.Close()
			out := zb.Bytes()
			if f.gzipMangle != nil {
				out = f.gzipMangle(r.URL.Path, out)
			}
			w.Write(out)
			return
		}
		fmt.Fprint(w, body)
	default:
		http.NotFound(w, r)
	}
}

func run(t *testing.T, f *fakeServer, mod func(*Options)) (*Summary, string, error) {
	t.Helper()
	o := Options{Server: f.URL, OutDir: t.TempDir(), MaxWait: 50 * time.Millisecond, MaxRetries: 4}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := c.Run(context.Background())
	return sum, o.OutDir, err
}

func TestClientAgainstFlakyServers(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(*fakeServer)
		opts    func(*Options)
		wantErr string
		check   func(t *testing.T, f *fakeServer, s *Summary, dir string)
	}{
		{name: "clean", check: func(t *testing.T, f *fakeServer, s *Summary, dir string) {
			if s.Resources != 3 || s.Types["Patient"].Resources != 2 || len(s.Errors) != 1 {
				t.Errorf("summary = %+v", s)
			}
			for _, name := range []string{"manifest.json", "Patient.1.ndjson", "Observation.1.ndjson", "error/OperationOutcome.1.ndjson"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
					t.Errorf("missing %s", name)
				}
			}
		}},
		{name: "429 burst at kick-off", setup: func(f *fakeServer) { f.kickoffFailures = []int{429, 429, 429} }, check: func(t *testing.T, f *fakeServer, s *Summary, _ string) {
			if f.kickoffs.Load() != 4 || s.Resources != 3 {
				t.Errorf("kick-offs = %d, resources = %d", f.kickoffs.Load(), s.Resources)
			}
		}},
		{name: "5xx burst while polling", setup: func(f *fakeServer) { f.pollFailures = []int{503, 500, 502} }},
		{name: "retries are bounded", setup: func(f *fakeServer) { f.pollFailures = []int{503, 503, 503, 503, 503, 503, 503} }, wantErr: "gave up after 4 retries"},
		{name: "non-FHIR error body", setup: func(f *fakeServer) { f.kickoffFailures = []int{400}; f.errorBody = "<html>bad gateway thing</html>" }, wantErr: "not a FHIR OperationOutcome"},
		{name: "FHIR error body", setup: func(f *fakeServer) {
			f.kickoffFailures = []int{400}
			f.errorBody = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid","diagnostics":"_type: nope"}]}`
		}, wantErr: "_type: nope"},
		{name: "malformed manifest", setup: func(f *fakeServer) { f.manifest = func(string) string { return `{"output": [` } }, wantErr: "malformed manifest"},
		{name: "manifest with a bad URL", setup: func(f *fakeServer) {
			f.manifest = func(string) string {
				return `{"transactionTime":"x","output":[{"type":"Patient","url":"/relative/Patient.ndjson"}],"error":[]}`
			}
		}, wantErr: "not an absolute"},
		{name: "file that is not NDJSON", setup: func(f *fakeServer) { f.files["/files/Observation.ndjson"] = `[{"resourceType":"Observation"}]` }, wantErr: "not a JSON resource"},
		// A wrong count is reported and the file kept, as SMART's client does
		// with the reference server's some_file_generation_failed case.
		{name: "count mismatch", setup: func(f *fakeServer) { f.files["/files/Patient.ndjson"] = `{"resourceType":"Patient","id":"1"}` + "\n" }, check: func(t *testing.T, f *fakeServer, s *Summary, dir string) {
			if len(s.Mismatches) != 1 || !strings.Contains(s.Mismatches[0], "manifest says 2") || !s.HasErrors() {
				t.Errorf("mismatches = %q, HasErrors %v; want the Patient file reported", s.Mismatches, s.HasErrors())
			}
			if b, err := os.ReadFile(filepath.Join(dir, "Patient.1.ndjson")); err != nil || !strings.Contains(string(b), `"id":"1"`) {
				t.Errorf("the file with the wrong count was not kept: %v", err)
			}
		}},
		{name: "line of another type", setup: func(f *fakeServer) {
			f.files["/files/Observation.ndjson"] = `{"resourceType":"Patient","id":"9"}` + "\n"
		}, wantErr: "is a Patient in a file the manifest says holds Observation"},
		// A server that sends a type the request did not ask for exports
		// more than asked: the file is not downloaded, and it is reported.
		{name: "type not asked for", opts: func(o *Options) { o.Types = []string{"Patient"} }, check: func(t *testing.T, f *fakeServer, s *Summary, dir string) {
			if f.fileGets["/files/Observation.ndjson"] != 0 {
				t.Errorf("the Observation file was downloaded")
			}
			if _, err := os.Stat(filepath.Join(dir, "Observation.1.ndjson")); err == nil {
				t.Errorf("the Observation file was kept")
			}
			if len(s.Unasked) != 1 || !s.HasErrors() || s.Resources != 2 {
				t.Errorf("unasked = %q, HasErrors %v, resources %d", s.Unasked, s.HasErrors(), s.Resources)
			}
		}},
		{name: "missing file", setup: func(f *fakeServer) { delete(f.files, "/files/Patient.ndjson") }, wantErr: "404"},
		{name: "gzip", setup: func(f *fakeServer) { f.gzipFiles = true }, check: func(t *testing.T, f *fakeServer, s *Summary, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "Patient.1.ndjson"))
			if !strings.HasPrefix(string(b), `{"resourceType":"Patient"`) {
				t.Errorf("file not decompressed: %q", b)
			}
		}},
		{name: "token not sent to capability URLs", opts: func(o *Options) { o.Token = "secret" }, check: func(t *testing.T, f *fakeServer, _ *Summary, _ string) {
			if f.auth["/$export"] != "Bearer secret" || f.auth["/status/1"] != "Bearer secret" {
				t.Errorf("token not sent to the API: %v", f.auth)
			}
			if f.auth["/files/Patient.ndjson"] != "" {
				t.Errorf("token sent to a file URL although requiresAccessToken is false")
			}
		}},
		{name: "token sent when required", opts: func(o *Options) { o.Token = "secret" }, setup: func(f *fakeServer) {
			base := f.manifest
			f.manifest = func(u string) string {
				return strings.Replace(base(u), `"requiresAccessToken":false`, `"requiresAccessToken":true`, 1)
			}
		}, check: func(t *testing.T, f *fakeServer, _ *Summary, _ string) {
			if f.auth["/files/Patient.ndjson"] != "Bearer secret" {
				t.Errorf("token not sent although requiresAccessToken is true")
			}
		}},
		{name: "slow polls with Retry-After in seconds", setup: func(f *fakeServer) {
			f.pending202 = 2
			f.retryAfter = func() string { return "1" }
		}, opts: func(o *Options) { o.MaxWait = 5 * time.Second }, check: func(t *testing.T, f *fakeServer, _ *Summary, _ string) {
			for i := 1; i < len(f.polls); i++ {
				if gap := f.polls[i].Sub(f.polls[i-1]); gap < 900*time.Millisecond {
					t.Errorf("poll %d came %s after the last, Retry-After was 1s", i, gap)
				}
			}
		}},
		{name: "Retry-After as an HTTP-date", setup: func(f *fakeServer) {
			f.pending202 = 1
			f.retryAfter = func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }
		}, opts: func(o *Options) { o.MaxWait = 5 * time.Second }, check: func(t *testing.T, f *fakeServer, _ *Summary, _ string) {
			if len(f.polls) != 2 || f.polls[1].Sub(f.polls[0]) < 900*time.Millisecond {
				t.Errorf("polls = %v: the HTTP-date was not honoured", f.polls)
			}
		}},
		// Each poll lets the server hold it as long as the client waits
		// anyway: the Retry-After of the last 202, 1 s before the first.
		{name: "polls send Prefer: wait", setup: func(f *fakeServer) {
			f.pending202 = 2
			f.retryAfter = func() string { return "0" }
		}, check: func(t *testing.T, f *fakeServer, _ *Summary, _ string) {
			want := []string{"wait=1", "wait=1", "wait=1"}
			if strings.Join(f.prefers, ";") != strings.Join(want, ";") {
				t.Errorf("Prefer of the polls = %q, want %q", f.prefers, want)
			}
		}},
		{name: "Prefer: wait follows Retry-After", setup: func(f *fakeServer) {
			f.pending202 = 2
			f.retryAfter = func() string { return "2" }
		}, opts: func(o *Options) { o.MaxWait = 5 * time.Second }, check: func(t *testing.T, f *fakeServer, _ *Summary, _ string) {
			want := []string{"wait=1", "wait=2", "wait=2"}
			if strings.Join(f.prefers, ";") != strings.Join(want, ";") {
				t.Errorf("Prefer of the polls = %q, want %q", f.prefers, want)
			}
		}},
		{name: "Retry-After is capped", setup: func(f *fakeServer) {
			f.pending202 = 1
			f.retryAfter = func() string { return "3600" }
		}, opts: func(o *Options) { o.MaxWait = 100 * time.Millisecond }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			sum, dir, err := run(t, f, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, f, sum, dir)
			}
		})
	}
}

func TestResumeKeepsCompleteFiles(t *testing.T) {
	f := newFake(t)
	dir := t.TempDir()
	opts := func(o *Options) { o.OutDir = dir }
	if _, _, err := run(t, f, opts); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "Observation.1.ndjson"))
	os.WriteFile(filepath.Join(dir, "Patient.1.ndjson.part"), []byte("partial"), 0o644)
	sum, _, err := run(t, f, func(o *Options) { o.OutDir = dir; o.Resume = true })
	if err != nil {
		t.Fatal(err)
	}
	if f.kickoffs.Load() != 1 {
		t.Errorf("resume kicked off a new export")
	}
	if f.fileGets["/files/Patient.ndjson"] != 1 || f.fileGets["/files/Observation.ndjson"] != 2 {
		t.Errorf("file fetches = %v, want only the missing file again", f.fileGets)
	}
	if sum.Skipped != 2 || sum.Resources != 3 {
		t.Errorf("summary = %+v", sum)
	}
}

func TestCancelOnAbortSendsDelete(t *testing.T) {
	f := newFake(t)
	f.pending202 = 1000
	ctx, cancel := context.WithCancel(context.Background())
	c, err := New(Options{Server: f.URL, OutDir: t.TempDir(), CancelOnAbort: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		// Cancel once the client polls (the limit only ends a hang).
		waitfor.Condition(time.Minute, 5*time.Millisecond, func() bool {
			f.mu.Lock()
			defer f.mu.Unlock()
			return len(f.polls) > 0
		})
		cancel()
	}()
	if _, err := c.Run(ctx); err == nil {
		t.Fatal("run was not interrupted")
	}
	if f.deletes.Load() != 1 {
		t.Errorf("DELETE sent %d times, want 1", f.deletes.Load())
	}
}

func TestUnreachableServerFailsFast(t *testing.T) {
	f := newFake(t)
	url := f.URL
	f.Close()
	c, _ := New(Options{Server: url, OutDir: t.TempDir()}, nil, nil)
	_, err := c.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v", err)
	}
}

// TestBarReporterUnderParallelDownloads drives the terminal reporter with
// mpb rendering while polls and parallel downloads report into it (it once
// deadlocked: a lock held across an mpb call that waited for a decorator
// taking the same lock).
func TestBarReporterUnderParallelDownloads(t *testing.T) {
	f := newFake(t)
	f.pending202 = 3
	f.retryAfter = func() string { return "0" }
	for i := 0; i < 24; i++ {
		f.files[fmt.Sprintf("/files/P%d.ndjson", i)] = strings.Repeat(`{"resourceType":"Patient","id":"x"}`+"\n", 500)
	}
	f.manifest = func(base string) string {
		var out []string
		for i := 0; i < 24; i++ {
			count := ""
			if i%2 == 0 {
				count = `,"count":500`
			}
			out = append(out, fmt.Sprintf(`{"type":"Patient","url":"%s/files/P%d.ndjson"%s}`, base, i, count))
		}
		return `{"transactionTime":"x","request":"r","requiresAccessToken":false,"output":[` + strings.Join(out, ",") + `],"error":[]}`
	}
	var buf syncBuffer
	done := make(chan error, 1)
	go func() {
		c, err := New(Options{Server: f.URL, OutDir: t.TempDir(), Parallel: 8, MaxWait: 20 * time.Millisecond}, nil, &BarReporter{W: &buf})
		if err != nil {
			done <- err
			return
		}
		sum, err := c.Run(context.Background())
		if err == nil && sum.Resources != 24*500 {
			err = fmt.Errorf("resources = %d", sum.Resources)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the export with the bar reporter did not finish (deadlock?)")
	}
	if !strings.Contains(buf.String(), "total (24 files)") {
		t.Errorf("no total bar drawn:\n%s", buf.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLevelFromOptions(t *testing.T) {
	tests := []struct {
		name      string
		opts      Options
		wantLevel string
		wantPost  bool
		wantErr   string
	}{
		{name: "default", opts: Options{}, wantLevel: "system"},
		{name: "group implies group level", opts: Options{Group: "g"}, wantLevel: "group"},
		{name: "patient implies patient level and POST", opts: Options{Patients: []string{"p"}}, wantLevel: "patient", wantPost: true},
		{name: "group with patient", opts: Options{Group: "g", Patients: []string{"p"}}, wantLevel: "group", wantPost: true},
		{name: "group contradicts patient level", opts: Options{Group: "g", Level: "patient"}, wantErr: "contradicts --level patient"},
		{name: "group contradicts system level", opts: Options{Group: "g", Level: "system"}, wantErr: "contradicts --level system"},
		{name: "patient contradicts system level", opts: Options{Patients: []string{"p"}, Level: "system"}, wantErr: "contradicts --level system"},
		{name: "group level needs a group", opts: Options{Level: "group"}, wantErr: "needs --group"},
		{name: "unknown level", opts: Options{Level: "everything"}, wantErr: "want system"},
		{name: "resume and force", opts: Options{Resume: true, Force: true}, wantErr: "contradict"},
		{name: "status with a kick-off parameter", opts: Options{StatusURL: "http://x/status/1", Types: []string{"Patient"}}, wantErr: "--status"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Server = "http://127.0.0.1:1/fhir"
			c, err := New(o, nil, nil)
			if tc.wantErr != "" {
				var ue *UsageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a UsageError mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.opts.Level != tc.wantLevel || c.opts.Post != tc.wantPost {
				t.Errorf("level %q post %v, want %q %v", c.opts.Level, c.opts.Post, tc.wantLevel, tc.wantPost)
			}
		})
	}
}

// TestDroppedFilterInErrorFiles: a server that reports a dropped
// _typeFilter only in its error files (not in the kick-off reply) still
// stops a strict run before any output file is fetched, and the export
// is cancelled.
func TestDroppedFilterInErrorFiles(t *testing.T) {
	f := newFake(t)
	f.files["/files/oo.ndjson"] = `{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"not-supported","diagnostics":"ignored under handling=lenient: _typeFilter: not supported","expression":["_typeFilter"]}]}` + "\n"
	_, _, err := run(t, f, func(o *Options) {
		o.TypeFilters = []string{"Observation?code=1"}
		o.StrictFilters = true
		o.Lenient = true
	})
	if !errors.Is(err, ErrFilterDropped) {
		t.Fatalf("err = %v, want ErrFilterDropped", err)
	}
	if f.fileGets["/files/Patient.ndjson"]+f.fileGets["/files/Observation.ndjson"] != 0 {
		t.Errorf("output files fetched: %v", f.fileGets)
	}
	if f.deletes.Load() != 1 {
		t.Errorf("DELETEs = %d, want 1", f.deletes.Load())
	}
	// Negative control: without strict filters the same export completes.
	f2 := newFake(t)
	f2.files["/files/oo.ndjson"] = f.files["/files/oo.ndjson"]
	if _, _, err := run(t, f2, func(o *Options) { o.TypeFilters = []string{"Observation?code=1"} }); err != nil {
		t.Fatalf("non-strict run: %v", err)
	}
}

// TestAttachments: DocumentReference attachments are fetched into
// attachments/, relative URLs against the FHIR base; the token goes to the
// FHIR server's origin only, never to another host.
func TestAttachments(t *testing.T) {
	var otherAuth atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherAuth.Store(r.Header.Get("Authorization"))
		fmt.Fprint(w, "%PDF-other")
	}))
	t.Cleanup(other.Close)
	f := newFake(t)
	f.files["/files/DocumentReference.ndjson"] = `{"resourceType":"DocumentReference","id":"d1","content":[{"attachment":{"url":"Binary/b1","contentType":"text/plain"}},{"attachment":{"url":"` + other.URL + `/x.pdf","contentType":"application/pdf"}},{"attachment":{"data":"aGk="}}]}` + "\n"
	f.files["/Binary/b1"] = "hello"
	base := f.manifest
	f.manifest = func(u string) string {
		return strings.Replace(base(u), `"output":[`, `"output":[{"type":"DocumentReference","url":"`+u+`/files/DocumentReference.ndjson","count":1},`, 1)
	}
	// The fake serves files under /files/ only: route /Binary/ there too.
	inner := f.Server.Config.Handler
	f.Server.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/Binary/b1" {
			f.mu.Lock()
			f.auth[r.URL.Path] = r.Header.Get("Authorization")
			f.mu.Unlock()
			fmt.Fprint(w, f.files["/Binary/b1"])
			return
		}
		inner.ServeHTTP(w, r)
	})
	sum, dir, err := run(t, f, func(o *Options) { o.Attachments = true; o.Token = "secret" })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Attachments != 2 {
		t.Errorf("attachments = %d, want 2", sum.Attachments)
	}
	for name, want := range map[string]string{"DocumentReference-d1.1.txt": "hello", "DocumentReference-d1.2.pdf": "%PDF-other"} {
		if b, err := os.ReadFile(filepath.Join(dir, "attachments", name)); err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", name, b, err, want)
		}
	}
	if f.auth["/Binary/b1"] != "Bearer secret" {
		t.Errorf("the FHIR server's Binary did not get the token")
	}
	if v, _ := otherAuth.Load().(string); v != "" {
		t.Errorf("another host got Authorization %q", v)
	}
}

// TestPollWait: after a 202 the client waits Retry-After, less the time
// the server held the poll when it says so (Preference-Applied: wait), and
// the next poll's wait preference is that Retry-After.
func TestPollWait(t *testing.T) {
	tests := []struct {
		name         string
		header       http.Header
		heldFor      time.Duration // how long ago the poll was sent
		wantMin      time.Duration
		wantMax      time.Duration
		wantInterval time.Duration
	}{
		{name: "not held", header: http.Header{"Retry-After": {"1"}}, heldFor: 2 * time.Second, wantMin: time.Second, wantMax: time.Second, wantInterval: time.Second},
		{name: "held for the interval", header: http.Header{"Retry-After": {"1"}, "Preference-Applied": {"wait=1"}}, heldFor: time.Second, wantMin: 0, wantMax: 0, wantInterval: time.Second},
		{name: "held in a list", header: http.Header{"Retry-After": {"5"}, "Preference-Applied": {"respond-async, Wait=5"}}, heldFor: 6 * time.Second, wantMin: 0, wantMax: 0, wantInterval: 5 * time.Second},
		{name: "held for part of it", header: http.Header{"Retry-After": {"10"}, "Preference-Applied": {"wait=10"}}, heldFor: time.Second, wantMin: 8 * time.Second, wantMax: 9 * time.Second, wantInterval: 10 * time.Second},
		{name: "another preference applied", header: http.Header{"Retry-After": {"1"}, "Preference-Applied": {"respond-async"}}, heldFor: time.Second, wantMin: time.Second, wantMax: time.Second, wantInterval: time.Second},
		{name: "capped", header: http.Header{"Retry-After": {"3600"}}, wantMin: time.Minute, wantMax: time.Minute, wantInterval: time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var interval time.Duration
			got := pollWait(tc.header, time.Now().Add(-tc.heldFor), time.Minute, &interval)
			if got < tc.wantMin || got > tc.wantMax {
				t.Errorf("wait %s, want %s to %s", got, tc.wantMin, tc.wantMax)
			}
			if interval != tc.wantInterval {
				t.Errorf("next Prefer: wait %s, want %s", interval, tc.wantInterval)
			}
		})
	}
}
