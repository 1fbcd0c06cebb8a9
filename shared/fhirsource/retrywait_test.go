package fhirsource

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// TestRetryAfterIsTakenAsGiven: the wait an upstream asks for is the wait
// (retry.Wait), not the longer of it and our backoff: with a backoff of an
// hour, two 503s asking for Retry-After: 0 are retried at once, and each
// retry logs a wait of 0s. (The former rule waited up to the hour: this
// test then fails at its context's deadline.)
func TestRetryAfterIsTakenAsGiven(t *testing.T) {
	var refused atomic.Int64
	_, hs := upstream(t, fhirtest.Options{Fault: func(r *http.Request, _ int64) *fhirtest.Fault {
		if r.URL.Path == "/Patient" && refused.Add(1) <= 2 {
			return &fhirtest.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "0"}
		}
		return nil
	}})
	var mu sync.Mutex
	var logs bytes.Buffer
	s := newSource(t, hs.URL, func(o *Options) {
		o.Backoff, o.MaxBackoff = time.Hour, time.Hour
		o.Log = slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	})
	// A safety net, not a measurement: the old rule would sleep past it.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := s.Open(ctx, export.Query{Level: bulkdata.LevelSystem, Until: &until}, "Patient", "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatalf("read after two 503s with Retry-After: 0: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	retries := strings.Count(logs.String(), "upstream retry")
	if retries != 2 || strings.Count(logs.String(), "wait=0s") != 2 {
		t.Fatalf("%d retries logged, want 2 with wait=0s:\n%s", retries, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
