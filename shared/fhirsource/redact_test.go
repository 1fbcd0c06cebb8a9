package fhirsource

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRetriesAreCountedAndRedacted: an upstream that answers 429 to a
// search naming a patient is retried; the retries and the 429s are
// counted, and neither the retry log lines nor the error that ends the
// search carry the patient id (they reach the Step Functions history).
func TestRetriesAreCountedAndRedacted(t *testing.T) {
	const secret = "patient-secret-4711"
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(hs.Close)
	var logs bytes.Buffer
	src, err := New(Options{BaseURL: hs.URL, MaxRetries: 2, Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Log: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.client.get(context.Background(), hs.URL+"/Observation?patient="+secret+"&_count=10")
	if err == nil {
		t.Fatal("a search the upstream throttles forever succeeded")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("the error names the patient: %v", err)
	}
	if !strings.Contains(logs.String(), "upstream retry") {
		t.Fatalf("no retry was logged: %s", logs.String())
	}
	if strings.Contains(logs.String(), secret) {
		t.Errorf("the retry log names the patient: %s", logs.String())
	}
	if retries, throttled := src.RetryStats(); retries != 2 || throttled != 2 {
		t.Errorf("RetryStats = %d, %d; want 2, 2", retries, throttled)
	}
	// Negative control: the URL itself does name the patient.
	if !strings.Contains(hs.URL+"/Observation?patient="+secret, secret) || strings.Contains(Redact(hs.URL+"/Observation?patient="+secret), secret) {
		t.Error("Redact does not remove the query")
	}
}
