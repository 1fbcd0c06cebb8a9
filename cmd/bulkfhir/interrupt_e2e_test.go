package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// stallingServer is a Bulk Data server that never finishes on its own:
// either its export stays in progress (stage "polling"), or it completes
// with two small files and one whose download stalls after a few lines
// (stage "downloading"). It records DELETEs.
type stallingServer struct {
	*httptest.Server
	stage      string
	deleteHang bool
	polls      atomic.Int32
	deletes    atomic.Int32
	stalled    atomic.Bool
	// unstall makes the Observation file download whole (1000 lines).
	unstall  atomic.Bool
	kickoffs atomic.Int32
	gets     sync.Map // path → *atomic.Int32
}

func (s *stallingServer) count(path string) *atomic.Int32 {
	v, _ := s.gets.LoadOrStore(path, new(atomic.Int32))
	return v.(*atomic.Int32)
}

func newStallingServer(t *testing.T, stage string, deleteHang bool) *stallingServer {
	s := &stallingServer{stage: stage, deleteHang: deleteHang}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *stallingServer) serve(w http.ResponseWriter, r *http.Request) {
	// From the request, not s.URL: the handler may run before the test's
	// goroutine has stored the server (a race for the detector).
	base := "http://" + r.Host
	s.count(r.URL.Path).Add(1)
	switch {
	case r.URL.Path == "/fhir/$export":
		s.kickoffs.Add(1)
		w.Header().Set("Content-Location", base+"/status/1")
		w.WriteHeader(http.StatusAccepted)
	case r.URL.Path == "/status/1" && r.Method == http.MethodDelete:
		s.deletes.Add(1)
		if s.deleteHang {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(http.StatusAccepted)
	case r.URL.Path == "/status/1":
		s.polls.Add(1)
		if s.stage == "polling" {
			w.Header().Set("Retry-After", "1")
			w.Header().Set("X-Progress", "still working")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"transactionTime":"2026-01-01T00:00:00.000Z","request":"%[1]s/fhir/$export","requiresAccessToken":false,
			"output":[{"type":"Patient","url":"%[1]s/files/p","count":2},{"type":"Condition","url":"%[1]s/files/c","count":1},
			{"type":"Observation","url":"%[1]s/files/o","count":1000}],"error":[]}`, base)
	case r.URL.Path == "/files/p":
		fmt.Fprint(w, "{\"resourceType\":\"Patient\",\"id\":\"1\"}\n{\"resourceType\":\"Patient\",\"id\":\"2\"}\n")
	case r.URL.Path == "/files/c":
		fmt.Fprint(w, "{\"resourceType\":\"Condition\",\"id\":\"1\"}\n")
	case r.URL.Path == "/files/o" && s.unstall.Load():
		for i := 0; i < 1000; i++ {
			fmt.Fprintf(w, "{\"resourceType\":\"Observation\",\"id\":\"%d\"}\n", i)
		}
	case r.URL.Path == "/files/o":
		for i := 0; i < 10; i++ {
			fmt.Fprintf(w, "{\"resourceType\":\"Observation\",\"id\":\"%d\"}\n", i)
		}
		// Half a line, then nothing: a download caught mid-line.
		fmt.Fprint(w, `{"resourceType":"Observ`)
		w.(http.Flusher).Flush()
		s.stalled.Store(true)
		<-r.Context().Done()
	default:
		http.NotFound(w, r)
	}
}

// cli is the bulkfhir binary running as a child, with or without a
// pseudo-terminal.
type cli struct {
	t   *testing.T
	cmd *exec.Cmd
	tty *os.File // pty master, nil without one
	mu  sync.Mutex
	out bytes.Buffer // stdout and stderr as they came
	// stdout alone, without a pty (under one both are the terminal)
	stdout bytes.Buffer
	done   chan struct{}
	err    error
	// copied is closed when the terminal's output has been read to its end.
	copied chan struct{}
}

type lockedWriter struct {
	c      *cli
	stdout bool
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if w.stdout {
		w.c.stdout.Write(p)
	}
	return w.c.out.Write(p)
}

func startCLI(t *testing.T, withPTY bool, args ...string) *cli {
	t.Helper()
	c := &cli{t: t, cmd: exec.Command(binPath, args...), done: make(chan struct{}), copied: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), "BULKFHIR_TOKEN=")
	if withPTY {
		tty, err := pty.StartWithSize(c.cmd, &pty.Winsize{Rows: 40, Cols: 120})
		if err != nil {
			t.Fatal(err)
		}
		c.tty = tty
		// Drain the terminal: a full pty buffer would block the child.
		go func() {
			io.Copy(lockedWriter{c: c}, tty) // ends with EIO once the child has exited
			close(c.copied)
		}()
	} else {
		close(c.copied)
		c.cmd.Stdout, c.cmd.Stderr = lockedWriter{c: c, stdout: true}, lockedWriter{c: c}
		c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			c.cmd.Process.Kill()
			<-c.done
		}
		if c.tty != nil {
			c.tty.Close()
		}
	})
	return c
}

func (c *cli) output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// interrupt sends Ctrl-C: through the terminal's line discipline under a
// pty (SIGINT to the foreground process group, as a keyboard does), as a
// signal otherwise.
func (c *cli) interrupt() {
	c.t.Helper()
	if c.tty != nil {
		if _, err := c.tty.Write([]byte{3}); err != nil {
			c.t.Fatal(err)
		}
		return
	}
	if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
		c.t.Fatal(err)
	}
}

// waitExit waits for the process to end within limit and returns its
// status. The limit is the requirement (Ctrl-C ends the client
// within 2 s); it is the only time bound here.
func (c *cli) waitExit(limit time.Duration) int {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(limit):
		c.cmd.Process.Kill()
		<-c.done
		c.t.Fatalf("bulkfhir did not exit within %s of Ctrl-C; output:\n%s", limit, c.output())
	}
	<-c.copied
	if c.err == nil {
		return 0
	}
	if ee, ok := c.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	c.t.Fatalf("wait: %v", c.err)
	return -1
}

// waitFor waits for cond, failing with the output after a generous bound.
func waitFor(t *testing.T, c *cli, what string, cond func() bool) {
	t.Helper()
	exited := false
	ok := waitfor.Condition(30*time.Second, 20*time.Millisecond, func() bool {
		select {
		case <-c.done:
			exited = true
			return true
		default:
		}
		return cond()
	})
	switch {
	case exited && !cond():
		t.Fatalf("bulkfhir exited before %s: %v\n%s", what, c.err, c.output())
	case !ok:
		t.Fatalf("timed out waiting for %s; output:\n%s", what, c.output())
	}
}

func TestCtrlCStopsTheClient(t *testing.T) {
	for _, withPTY := range []bool{true, false} {
		for _, stage := range []string{"polling", "downloading"} {
			for _, cancel := range []bool{false, true} {
				name := fmt.Sprintf("pty=%v/%s/cancel-on-abort=%v", withPTY, stage, cancel)
				t.Run(name, func(t *testing.T) {
					s := newStallingServer(t, stage, false)
					out := t.TempDir()
					args := []string{"export", "--server", s.URL + "/fhir", "--out", out}
					if cancel {
						args = append(args, "--cancel-on-abort")
					}
					c := startCLI(t, withPTY, args...)
					if stage == "polling" {
						waitFor(t, c, "a status poll", func() bool { return s.polls.Load() > 0 })
					} else {
						waitFor(t, c, "the small files and the stalled download", func() bool {
							_, errP := os.Stat(filepath.Join(out, "Patient.1.ndjson"))
							_, errC := os.Stat(filepath.Join(out, "Condition.1.ndjson"))
							return s.stalled.Load() && errP == nil && errC == nil
						})
					}
					c.interrupt()
					if code := c.waitExit(2 * time.Second); code != 130 {
						t.Errorf("exit status %d, want 130; output:\n%s", code, c.output())
					}
					got := c.output()
					if !strings.Contains(got, "interrupted during "+stage) {
						t.Errorf("output does not say where it was interrupted:\n%s", got)
					}
					if strings.Contains(got, "not a JSON resource") {
						t.Errorf("an interrupted download was reported as bad data:\n%s", got)
					}
					wantDeletes := int32(0)
					if cancel {
						wantDeletes = 1
						if !strings.Contains(got, "cancelled on the server") {
							t.Errorf("output does not say the export was cancelled:\n%s", got)
						}
					} else if !strings.Contains(got, s.URL+"/status/1") {
						t.Errorf("output does not give the status URL of the export left on the server:\n%s", got)
					}
					if n := s.deletes.Load(); n != wantDeletes {
						t.Errorf("DELETEs = %d, want %d", n, wantDeletes)
					}
					if stage != "downloading" {
						return
					}
					if !strings.Contains(got, "2 files complete") || !strings.Contains(got, "Observation.1.ndjson") {
						t.Errorf("output does not say what was kept and what is left:\n%s", got)
					}
					for name, want := range map[string]string{
						"Patient.1.ndjson":   "{\"resourceType\":\"Patient\",\"id\":\"1\"}\n{\"resourceType\":\"Patient\",\"id\":\"2\"}\n",
						"Condition.1.ndjson": "{\"resourceType\":\"Condition\",\"id\":\"1\"}\n",
					} {
						if b, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(b) != want {
							t.Errorf("%s = %q, %v; want it complete", name, b, err)
						}
					}
					for _, name := range []string{"Observation.1.ndjson", "Observation.1.ndjson.part"} {
						if _, err := os.Stat(filepath.Join(out, name)); err == nil {
							t.Errorf("%s of the interrupted download was left behind", name)
						}
					}
				})
			}
		}
	}
}

// TestSecondCtrlCExitsAtOnce: the first Ctrl-C starts the DELETE of
// --cancel-on-abort, which the server never answers; the second one must
// not wait for it.
func TestSecondCtrlCExitsAtOnce(t *testing.T) {
	for _, withPTY := range []bool{true, false} {
		t.Run(fmt.Sprintf("pty=%v", withPTY), func(t *testing.T) {
			s := newStallingServer(t, "polling", true)
			c := startCLI(t, withPTY, "export", "--server", s.URL+"/fhir", "--out", t.TempDir(), "--cancel-on-abort")
			waitFor(t, c, "a status poll", func() bool { return s.polls.Load() > 0 })
			c.interrupt()
			waitFor(t, c, "the DELETE", func() bool { return s.deletes.Load() > 0 })
			c.interrupt()
			if code := c.waitExit(2 * time.Second); code != 130 {
				t.Errorf("exit status %d, want 130; output:\n%s", code, c.output())
			}
			if !strings.Contains(c.output(), "interrupted again") {
				t.Errorf("output does not say why it exited:\n%s", c.output())
			}
		})
	}
}

// TestCtrlCWithJSONOutput: a script that asked for --output json gets a
// JSON report of the interrupt on stdout.
func TestCtrlCWithJSONOutput(t *testing.T) {
	s := newStallingServer(t, "downloading", false)
	out := t.TempDir()
	c := startCLI(t, false, "export", "--server", s.URL+"/fhir", "--out", out, "--output", "json")
	waitFor(t, c, "the stalled download", func() bool {
		_, errP := os.Stat(filepath.Join(out, "Patient.1.ndjson"))
		_, errC := os.Stat(filepath.Join(out, "Condition.1.ndjson"))
		return s.stalled.Load() && errP == nil && errC == nil
	})
	c.interrupt()
	if code := c.waitExit(2 * time.Second); code != 130 {
		t.Errorf("exit status %d, want 130", code)
	}
	c.mu.Lock()
	stdout := c.stdout.String()
	c.mu.Unlock()
	var rep struct {
		Status        string   `json:"status"`
		Stage         string   `json:"stage"`
		StatusURL     string   `json:"statusUrl"`
		FilesComplete int      `json:"filesComplete"`
		FilesLeft     []string `json:"filesLeft"`
		ServerRunning bool     `json:"serverRunning"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout)
	}
	if rep.Status != "interrupted" || rep.Stage != "downloading" || rep.StatusURL != s.URL+"/status/1" ||
		rep.FilesComplete != 2 || len(rep.FilesLeft) != 1 || rep.FilesLeft[0] != "Observation.1.ndjson" || rep.ServerRunning {
		t.Errorf("report = %+v", rep)
	}
}

// TestResumeAfterCtrlC: after an interrupted download, --resume continues
// the same export (no new kick-off), keeps the complete files and fetches
// only the one that was left.
func TestResumeAfterCtrlC(t *testing.T) {
	s := newStallingServer(t, "downloading", false)
	out := t.TempDir()
	c := startCLI(t, false, "export", "--server", s.URL+"/fhir", "--out", out, "--type", "Patient,Condition,Observation")
	waitFor(t, c, "the stalled download", func() bool {
		_, errP := os.Stat(filepath.Join(out, "Patient.1.ndjson"))
		_, errC := os.Stat(filepath.Join(out, "Condition.1.ndjson"))
		return s.stalled.Load() && errP == nil && errC == nil
	})
	c.interrupt()
	if code := c.waitExit(2 * time.Second); code != 130 {
		t.Fatalf("exit status %d, want 130\n%s", code, c.output())
	}
	s.unstall.Store(true)
	stdout, stderr, code := runCLI(t, "export", "--server", s.URL+"/fhir", "--out", out, "--type", "Patient,Condition,Observation", "--resume")
	if code != 0 {
		t.Fatalf("--resume: status %d\n%s%s", code, stdout, stderr)
	}
	if n := s.kickoffs.Load(); n != 1 {
		t.Errorf("kick-offs = %d, want 1: --resume started a new export", n)
	}
	for path, want := range map[string]int32{"/files/p": 1, "/files/c": 1, "/files/o": 2} {
		if n := s.count(path).Load(); n != want {
			t.Errorf("GET %s %d times, want %d", path, n, want)
		}
	}
	if n, _, err := countFileLines(filepath.Join(out, "Observation.1.ndjson")); err != nil || n != 1000 {
		t.Errorf("Observation.1.ndjson has %d lines (%v), want 1000", n, err)
	}
	if stdout, _, code := runCLI(t, "verify", "--out", out); code != 0 {
		t.Errorf("verify after resume: status %d\n%s", code, stdout)
	}
}

func countFileLines(path string) (int, int64, error) {
	b, err := os.ReadFile(path)
	return bytes.Count(b, []byte("\n")), int64(len(b)), err
}
