package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

// Latency is one API call's latency distribution.
type Latency struct {
	Name     string  `json:"name"`
	Clients  int     `json:"clients"`
	Requests int     `json:"requests"`
	P50ms    float64 `json:"p50ms"`
	P99ms    float64 `json:"p99ms"`
	MaxMs    float64 `json:"maxMs"`
}

// server is a `bulkfhir serve` child process.
type server struct {
	cmd  *exec.Cmd
	base string
	log  bytes.Buffer
}

func startServer(ctx context.Context, o Options, args ...string) (*server, error) {
	state := filepath.Join(o.Work, fmt.Sprintf("state-%d", time.Now().UnixNano()))
	s := &server{}
	s.cmd = exec.CommandContext(ctx, o.Exe, append([]string{"serve", "--addr", "127.0.0.1:0", "--state", state}, args...)...)
	s.cmd.Stderr = &s.log
	s.cmd.Env = append(os.Environ(), "BULKFHIR_LOG_LEVEL=warn")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if addr, err := os.ReadFile(filepath.Join(state, "addr")); err == nil && len(addr) > 0 {
			s.base = "http://" + strings.TrimSpace(string(addr)) + "/fhir"
			return s, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop()
	return nil, fmt.Errorf("bulkfhir serve did not start: %s", s.log.String())
}

func (s *server) stop() {
	if s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			s.cmd.Process.Kill()
			<-done
		}
	}
}

// httpFigures: the embedded server and the client end to end on loopback,
// then the API latency with many concurrent clients.
func httpFigures(ctx context.Context, o Options, data string, rep *Report) error {
	tokens := filepath.Join(o.Work, "tokens")
	var lines []string
	for i := 0; i < o.Clients; i++ {
		lines = append(lines, fmt.Sprintf("token-%d client-%d", i, i))
	}
	if err := os.WriteFile(tokens, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	srv, err := startServer(ctx, o, "--data", data, "--tokens", tokens, "--max-live-jobs", "1000", "--max-jobs", "8")
	if err != nil {
		return err
	}
	defer srv.stop()

	var base float64
	if len(rep.Throughput) > 0 {
		base = rep.Throughput[0].MBPerSec
	}
	for _, e := range []struct {
		name, note string
		partial    bool
		target     *Target
	}{
		{"end to end: bulkfhir serve + bulkfhir export over loopback HTTP",
			"kick-off to every file on disk; 4 units and 4 downloads at once; each status poll held until the export completes (Prefer: wait)", false, &Target{Min: 0.25}},
		{"end to end, allowPartialManifests=true (bulkfhir export --partial-manifests)",
			"the same, downloads start while the export runs: 4 units and up to 4 downloads at once, side by side", true, nil},
	} {
		t, err := endToEnd(ctx, o, srv.base, e.partial, rep.Resources, base)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		t.Name, t.Note, t.Target = e.name, e.note, e.target
		rep.Throughput = append(rep.Throughput, t)
	}

	kick, status, err := latency(ctx, srv.base, o.Clients, 10)
	if err != nil {
		return err
	}
	rep.Latency = append(rep.Latency, kick, status)
	return nil
}

// e2eRuns is how many times each end-to-end export runs; its row is the
// median.
const e2eRuns = 3

// endToEnd runs e2eRuns exports of everything with bulkfhir export's client
// against the server at base, each into a new folder, and returns the
// median, its ratio to the baseline's MB/s. A run that did not get every
// resource is an error: an export that leaves data out is not faster.
func endToEnd(ctx context.Context, o Options, base string, partial bool, resources int64, baseline float64) (Throughput, error) {
	var runs []Throughput
	for i := 0; i < e2eRuns; i++ {
		out := filepath.Join(o.Work, fmt.Sprintf("e2e-out-%d", time.Now().UnixNano()))
		c, err := bulkclient.New(bulkclient.Options{Server: base, Level: "system", Token: "token-0", OutDir: out, Parallel: 4, PartialManifests: partial}, nil, nil)
		if err != nil {
			return Throughput{}, err
		}
		// The last run's files are written back before this one is timed,
		// as before every timed engine step.
		syscall.Sync()
		start := time.Now()
		sum, err := c.Run(ctx)
		if err != nil {
			return Throughput{}, err
		}
		d := time.Since(start)
		if sum.Resources != resources {
			return Throughput{}, fmt.Errorf("got %d resources, the data has %d", sum.Resources, resources)
		}
		t := throughput("", sum.Resources, sum.Bytes, d, "")
		if baseline > 0 {
			t.Ratio = t.MBPerSec / baseline
		}
		runs = append(runs, t)
		if err := os.RemoveAll(out); err != nil {
			return Throughput{}, err
		}
	}
	return median(runs), nil
}

// latency runs clients that each kick off rounds small exports and fetch
// each one's status (after a warm-up round), and returns the two latency
// distributions. The exports run in the server meanwhile.
func latency(ctx context.Context, base string, clients, rounds int) (Latency, Latency, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var mu sync.Mutex
	var kicks, stats []time.Duration
	var firstErr error
	call := func(req *http.Request, want int) (string, time.Duration, error) {
		t := time.Now()
		resp, err := hc.Do(req)
		d := time.Since(t)
		if err != nil {
			return "", d, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want && !(want == http.StatusAccepted && resp.StatusCode == http.StatusOK) {
			return "", d, fmt.Errorf("%s %s: %d", req.Method, req.URL, resp.StatusCode)
		}
		return resp.Header.Get("Content-Location"), d, nil
	}
	var wg sync.WaitGroup
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// Round 0 warms up (connections, first writes) and is not
			// recorded.
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			for r := 0; r <= rounds; r++ {
				// Clients think between calls (50–150 ms, as a client
				// polling or starting its next export would), so the
				// figure is latency under concurrency, not a queue.
				time.Sleep(time.Duration(50+rng.IntN(100)) * time.Millisecond)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/$export?_type=Organization", nil)
				req.Header.Set("Accept", "application/fhir+json")
				req.Header.Set("Prefer", "respond-async")
				req.Header.Set("Authorization", fmt.Sprintf("Bearer token-%d", i))
				loc, dk, err := call(req, http.StatusAccepted)
				var ds time.Duration
				if err == nil {
					sreq, _ := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
					sreq.Header.Set("Authorization", fmt.Sprintf("Bearer token-%d", i))
					_, ds, err = call(sreq, http.StatusAccepted)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if r == 0 {
					mu.Unlock()
					continue
				}
				kicks = append(kicks, dk)
				if ds > 0 {
					stats = append(stats, ds)
				}
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if firstErr != nil {
		return Latency{}, Latency{}, firstErr
	}
	return dist("kick-off (GET $export, _type=Organization; the export then runs)", clients, kicks), dist("status (GET bulkstatus)", clients, stats), nil
}

func dist(name string, clients int, ds []time.Duration) Latency {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	at := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
	return Latency{Name: name, Clients: clients, Requests: len(ds), P50ms: ms(at(0.50)), P99ms: ms(at(0.99)), MaxMs: ms(ds[len(ds)-1])}
}
