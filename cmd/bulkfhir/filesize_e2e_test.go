package main

import (
	"net/http"
	"testing"
)

// TestMaximumFileSize: with _maximumFileSize every file is at most that
// many bytes (the resources are small), each output item reports its
// fileSize, and the files together still hold every resource once.
func TestMaximumFileSize(t *testing.T) {
	s := startServer(t, dataDir)
	src := sourceResources(t, dataDir)
	const max = 1 << 20 // the server's smallest allowed maximum
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_maximumFileSize=1048576", kickHeaders(), ""), nil)
	perType := map[string]int{}
	for _, o := range m.Output {
		perType[o.Type]++
		r := do(t, http.MethodGet, o.URL, nil, "")
		if o.FileSize == nil || *o.FileSize != int64(len(r.body)) {
			t.Errorf("%s fileSize = %v, file has %d bytes", o.Type, o.FileSize, len(r.body))
		}
		if len(r.body) > max {
			t.Errorf("%s file has %d bytes, more than _maximumFileSize %d", o.Type, len(r.body), max)
		}
	}
	if perType["Observation"] < 3 {
		t.Errorf("Observation came in %d files, want it split at 1 MiB", perType["Observation"])
	}
	sameSet(t, download(t, m), src)

	// Without it the server's own size (64 MiB) holds each type in one file.
	m = waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Observation", kickHeaders(), ""), nil)
	if len(m.Output) != 1 {
		t.Errorf("without _maximumFileSize Observation came in %d files, want 1", len(m.Output))
	}
	// Below the server's bound it is refused, naming the parameter.
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export?_maximumFileSize=1000", kickHeaders(), ""), 400, "_maximumFileSize")
	requireOutcome(t, do(t, http.MethodGet, s.base+"/$export?_maximumFileSize=big", kickHeaders(), ""), 400, "_maximumFileSize")
}
