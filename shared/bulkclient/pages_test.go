package bulkclient

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A page read again brings fresh links for the files already merged; new
// files are appended, so the names given so far stay.
func TestMergedPagesTakeFreshLinks(t *testing.T) {
	var p pages
	p.merge(&Manifest{TransactionTime: "t", Output: []Entry{{Type: "Patient", URL: "https://f/a?sig=1"}, {Type: "Patient", URL: "https://f/b?sig=1"}}})
	p.merge(&Manifest{TransactionTime: "t", Output: []Entry{{Type: "Patient", URL: "https://f/b?sig=2"}, {Type: "Patient", URL: "https://f/c?sig=2"}}})
	_, m, err := p.manifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range m.Output {
		got = append(got, e.URL)
	}
	want := []string{"https://f/a?sig=1", "https://f/b?sig=2", "https://f/c?sig=2"}
	if len(got) != len(want) {
		t.Fatalf("merged = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("merged = %v, want %v", got, want)
			break
		}
	}
}

// TestHeldPollThatListsFilesIsFollowedAtOnce: when a server that holds
// polls (Preference-Applied: wait) answers early with a partial manifest
// that lists new files, the client downloads them and polls again at once
// instead of sleeping out Retry-After: the next poll is held by the server
// anyway. The context's bound only ends a hang.
func TestHeldPollThatListsFilesIsFollowedAtOnce(t *testing.T) {
	var polls atomic.Int32
	var srv *httptest.Server
	manifest := func(files ...string) string {
		var out []string
		for _, f := range files {
			out = append(out, `{"type":"Patient","url":"`+srv.URL+`/files/`+f+`","count":1}`)
		}
		return `{"transactionTime":"2026-01-01T00:00:00Z","request":"` + srv.URL + `/$export","requiresAccessToken":false,"output":[` + strings.Join(out, ",") + `],"error":[]}`
	}
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/$export":
			w.Header().Set("Content-Location", "/status")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status" && polls.Add(1) == 1:
			w.Header().Set("Retry-After", "3600")
			w.Header().Set("Preference-Applied", "wait=3600")
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprint(w, manifest("a.ndjson"))
		case r.URL.Path == "/status":
			fmt.Fprint(w, manifest("a.ndjson", "b.ndjson"))
		case strings.HasPrefix(r.URL.Path, "/files/"):
			fmt.Fprint(w, `{"resourceType":"Patient","id":"`+r.URL.Path+`"}`+"\n")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := New(Options{Server: srv.URL, OutDir: t.TempDir(), PartialManifests: true, MaxWait: time.Hour}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sum, err := c.Run(ctx)
	if err != nil {
		t.Fatalf("run: %v (polls: %d)", err, polls.Load())
	}
	if sum.Resources != 2 || polls.Load() != 2 {
		t.Errorf("resources %d, polls %d; want 2 and 2", sum.Resources, polls.Load())
	}
}
