package bulkclient

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// rotatingTokens is a TokenSource whose token changes on Invalidate.
type rotatingTokens struct {
	gen         atomic.Int32
	invalidated atomic.Int32
}

func (r *rotatingTokens) Token(context.Context) (string, error) {
	return fmt.Sprintf("tok-%d", r.gen.Load()), nil
}

func (r *rotatingTokens) Invalidate() {
	r.invalidated.Add(1)
	r.gen.Add(1)
}

// TestTokenRenewedAfter401: the server revokes the client's token once
// during polling and once before the downloads; the client logs in again
// each time and the export completes.
func TestTokenRenewedAfter401(t *testing.T) {
	var mu sync.Mutex
	valid := "tok-0"
	revoke := func() { mu.Lock(); valid += "-revoked"; mu.Unlock() }
	accept := func(r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Authorization") == "Bearer "+valid {
			return true
		}
		// After a revocation the next generation is the valid one.
		if len(valid) > 5 && r.Header.Get("Authorization") == fmt.Sprintf("Bearer tok-%c", valid[4]+1) {
			valid = fmt.Sprintf("tok-%c", valid[4]+1)
			return true
		}
		return false
	}
	var polls atomic.Int32
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !accept(r) {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login","diagnostics":"expired"}]}`))
			return
		}
		switch r.URL.Path {
		case "/$export":
			w.Header().Set("Content-Location", srv.URL+"/status/1")
			w.WriteHeader(http.StatusAccepted)
			revoke() // expires during the export
		case "/status/1":
			if polls.Add(1) == 1 {
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusAccepted)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"transactionTime":"2026-01-01T00:00:00Z","request":"%s/$export","requiresAccessToken":true,
				"output":[{"type":"Patient","url":"%s/files/Patient.ndjson","count":1}],"error":[]}`, srv.URL, srv.URL)
			revoke() // and again before the downloads
		case "/files/Patient.ndjson":
			w.Header().Set("Content-Type", "application/fhir+ndjson")
			w.Write([]byte(`{"resourceType":"Patient","id":"1"}` + "\n"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	tokens := &rotatingTokens{}
	c, err := New(Options{Server: srv.URL, Tokens: tokens, OutDir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := c.Run(context.Background())
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	if sum.Resources != 1 {
		t.Errorf("resources = %d, want 1", sum.Resources)
	}
	if got := tokens.invalidated.Load(); got != 2 {
		t.Errorf("logged in again %d times, want 2 (once while polling, once for the download)", got)
	}
}

// TestTokenRefusedTwice: a server that refuses the renewed token too ends
// the run with the 401 instead of looping.
func TestTokenRefusedTwice(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/fhir+json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login","diagnostics":"no"}]}`))
	}))
	defer srv.Close()
	tokens := &rotatingTokens{}
	c, _ := New(Options{Server: srv.URL, Tokens: tokens, OutDir: t.TempDir()}, nil, nil)
	if _, err := c.Run(context.Background()); err == nil {
		t.Fatal("the export succeeded against a server that refuses every token")
	}
	if got := tokens.invalidated.Load(); got != 1 {
		t.Errorf("logged in again %d times, want 1", got)
	}
}
