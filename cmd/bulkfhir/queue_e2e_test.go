package main

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestKickoffsBeyondMaxRunningJobsQueueInOrder: with --max-running-jobs 2,
// the third and fourth kick-offs wait as accepted with their place in line
// in X-Progress; a cancel of a running job starts the oldest waiting one at
// once (not the newer one), and the last starts when a job completes. The
// upstream holds every page search until released, so no job ends by
// itself before that.
func TestKickoffsBeyondMaxRunningJobsQueueInOrder(t *testing.T) {
	upstream, open := heldUpstream(t)
	s := startServer(t, "", "--source-url", upstream, "--max-running-jobs", "2")
	t.Cleanup(open) // runs before the server stops
	var jobs []string
	for i := 0; i < 4; i++ {
		jobs = append(jobs, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""))
	}
	progress := func(i int) string {
		t.Helper()
		r := do(t, http.MethodGet, jobs[i], nil, "")
		if r.status != http.StatusAccepted {
			t.Fatalf("status of job %d = %d: %s", i, r.status, r.body)
		}
		return r.header.Get("X-Progress")
	}
	for i, want := range map[int]string{2: "queued: 0 jobs ahead", 3: "queued: 1 job ahead"} {
		if got := progress(i); got != want {
			t.Errorf("X-Progress of kick-off %d = %q, want %q", i, got, want)
		}
	}
	for i := 0; i < 2; i++ {
		if got := progress(i); strings.HasPrefix(got, "queued") {
			t.Errorf("X-Progress of running kick-off %d = %q", i, got)
		}
	}
	if d := do(t, http.MethodDelete, jobs[0], nil, ""); d.status != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", d.status, d.body)
	}
	if got := progress(2); strings.HasPrefix(got, "queued") {
		t.Errorf("after a cancel the oldest waiting job still says %q", got)
	}
	if got := progress(3); got != "queued: 0 jobs ahead" {
		t.Errorf("after a cancel the newest job says %q, want %q", got, "queued: 0 jobs ahead")
	}
	open()
	for _, i := range []int{1, 2, 3} {
		m := waitManifest(t, jobs[i], nil)
		if len(m.Output) == 0 {
			t.Errorf("job %d exported nothing", i)
		}
	}
}

// TestConcurrentKickoffsNeverPassTheRunningLimit: 30 kick-offs at once with
// --max-running-jobs 3 leave exactly 3 jobs running and 27 waiting, each at
// its own place in line.
func TestConcurrentKickoffsNeverPassTheRunningLimit(t *testing.T) {
	upstream, open := heldUpstream(t)
	s := startServer(t, "", "--source-url", upstream, "--max-running-jobs", "3", "--max-live-jobs", "50")
	t.Cleanup(open)
	const n = 30
	locations := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodGet, s.base+"/$export?_type=Patient", nil)
			req.Header = kickHeaders()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("kick-off %d: %v", i, err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("kick-off %d = %d", i, resp.StatusCode)
			}
			locations[i] = resp.Header.Get("Content-Location")
		}(i)
	}
	close(start)
	wg.Wait()
	running, positions := 0, map[string]bool{}
	for _, loc := range locations {
		if loc == "" {
			continue
		}
		r := do(t, http.MethodGet, loc, nil, "")
		p := r.header.Get("X-Progress")
		if strings.HasPrefix(p, "queued: ") {
			positions[p] = true
		} else {
			running++
		}
	}
	if running != 3 || len(positions) != n-3 {
		t.Fatalf("%d running, %d distinct queue positions; want 3 and %d", running, len(positions), n-3)
	}
}
