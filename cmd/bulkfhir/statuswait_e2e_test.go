package main

import (
	"net/http"
	"strings"
	"testing"
)

// TestStatusPollsAreHeldWhileTheExportRuns: against bulkfhir serve over
// HTTP, a status poll of a running export that sends Prefer: wait=1 is held
// and answers 202 with Preference-Applied and Retry-After; one without the
// preference, or to a server started with --max-status-wait 0, is not held;
// once the export completes, a held poll answers 200 with the manifest.
// The upstream holds every page search, so the export runs until released.
func TestStatusPollsAreHeldWhileTheExportRuns(t *testing.T) {
	tests := []struct {
		name        string
		serverArgs  []string
		prefer      string
		wantApplied string
	}{
		{name: "held", prefer: "wait=1", wantApplied: "wait=1"},
		{name: "capped by the server", serverArgs: []string{"--max-status-wait", "1s"}, prefer: "wait=30", wantApplied: "wait=1"},
		{name: "half a short write timeout", serverArgs: []string{"--write-timeout", "3s"}, prefer: "wait=30", wantApplied: "wait=1"},
		{name: "not asked", prefer: ""},
		{name: "off", serverArgs: []string{"--max-status-wait", "0"}, prefer: "wait=1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			upstream, open := heldUpstream(t)
			s := startServer(t, "", append([]string{"--source-url", upstream}, tc.serverArgs...)...)
			t.Cleanup(open) // runs before the server stops
			status := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), "")
			h := http.Header{}
			if tc.prefer != "" {
				h.Set("Prefer", tc.prefer)
			}
			r := do(t, http.MethodGet, status, h, "")
			if r.status != http.StatusAccepted {
				t.Fatalf("status = %d, want 202: %s", r.status, r.body)
			}
			if got := r.header.Get("Preference-Applied"); got != tc.wantApplied {
				t.Errorf("Preference-Applied = %q, want %q", got, tc.wantApplied)
			}
			if r.header.Get("Retry-After") == "" {
				t.Error("a 202 without Retry-After")
			}
			open()
			m := waitManifest(t, status, h)
			if len(m.Output) == 0 {
				t.Error("the export listed no files")
			}
		})
	}
}

// TestStatusWaitLongerThanTheWriteTimeoutIsRefused: a held poll must be
// answered before its write timeout cuts it off.
func TestStatusWaitLongerThanTheWriteTimeoutIsRefused(t *testing.T) {
	_, stderr, code := runCLI(t, "serve", "--addr", "127.0.0.1:0", "--state", t.TempDir(), "--data", dataDir, "--allow-anonymous",
		"--write-timeout", "4s", "--max-status-wait", "5s")
	if code == 0 || !strings.Contains(stderr, "--max-status-wait 5s must be between 0 and --write-timeout (4s)") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming both flags", code, stderr)
	}
}
