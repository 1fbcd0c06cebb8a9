package bulkclient

import (
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestStatusReadsACompressedManifest: a server that sends a large manifest
// only compressed (API Gateway behind the HTTP API, where plain it would
// cross the Lambda response cap) is asked for gzip, and the client reads
// the manifest through it.
func TestStatusReadsACompressedManifest(t *testing.T) {
	const files = 3000
	var items []string
	for i := 0; i < files; i++ {
		items = append(items, fmt.Sprintf(`{"type":"Observation","url":"https://files.example/o%d.ndjson","count":1}`, i))
	}
	manifest := `{"transactionTime":"2026-12-01T00:00:00Z","request":"https://x.example/fhir/$export","requiresAccessToken":false,"output":[` +
		strings.Join(items, ",") + `],"error":[]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			http.Error(w, "response over the Lambda limit", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zw.Write([]byte(manifest))
		zw.Close()
	}))
	defer srv.Close()
	c, err := New(Options{Server: srv.URL, OutDir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := c.Status(context.Background(), srv.URL+"/bulkstatus/j")
	if err != nil {
		t.Fatal(err)
	}
	if rep.State != "complete" || rep.Manifest == nil || len(rep.Manifest.Output) != files {
		t.Fatalf("state %q (%s), manifest %v; want complete with %d files", rep.State, rep.Error, rep.Manifest != nil, files)
	}
}
