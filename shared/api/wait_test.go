package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// watchedStore reports every Get, so a test knows a status request is
// being held (it reads the job again) before it changes the job.
type watchedStore struct {
	*exporttest.JobStore
	gets chan string
}

func (s watchedStore) Get(ctx context.Context, id string) (*export.Job, error) {
	select {
	case s.gets <- id:
	default:
	}
	return s.JobStore.Get(ctx, id)
}

// waitWorld is a handler with StatusWait set and two jobs of owner c1:
// "running" and "done".
func waitWorld(t *testing.T, statusWait time.Duration) (http.Handler, watchedStore) {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	store := watchedStore{exporttest.NewJobStore(), make(chan string, 64)}
	src := &exporttest.Source{Lines: map[string][]string{"Patient": {`{"resourceType":"Patient","id":"a"}`}}}
	svc := export.NewService(store, exporttest.NewFileStore(), nopRunner{}, src, export.Config{}, quiet)
	h := api.New(svc, api.Config{Auth: api.Anonymous{}, Files: fileServer{}, StatusWait: statusWait, Log: quiet})
	req := bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, Types: []string{"Patient"}}
	now := time.Now().UTC()
	for _, id := range []string{"running", "done"} {
		j := &export.Job{ID: id, Owner: api.AnonymousClient, Status: export.StatusInProgress, Request: req, RequestURL: "http://bulk.test/fhir/$export?_type=Patient",
			TransactionTime: now, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := store.Create(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	complete(t, store, "done")
	return h, store
}

func complete(t *testing.T, store watchedStore, id string) {
	t.Helper()
	ctx := context.Background()
	if err := store.PutFile(ctx, id, export.File{Key: id + "/Patient.000.ndjson", Kind: export.KindOutput, Type: "Patient", Count: 1, Bytes: 40, Unit: "Patient.0000"}); err != nil {
		t.Fatal(err)
	}
	at, expires := time.Now().UTC(), time.Now().UTC().Add(time.Hour)
	if _, err := store.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCompleted,
		CompletedAt: &at, ExpiresAt: &expires}); err != nil {
		t.Fatal(err)
	}
}

func getStatus(h http.Handler, id, prefer string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "http://bulk.test/fhir/bulkstatus/"+id, nil)
	req.Header.Set("Accept", "application/json")
	if prefer != "" {
		req.Header.Set("Prefer", prefer)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestStatusWait: a status request with Prefer: wait is held only where
// the server allows it, only while the export runs, at most as long as the
// server allows, and says so in Preference-Applied; Retry-After is always
// sent while the export runs.
func TestStatusWait(t *testing.T) {
	tests := []struct {
		name        string
		statusWait  time.Duration
		job, prefer string
		wantStatus  int
		wantApplied string
	}{
		{name: "off (AWS)", statusWait: 0, job: "running", prefer: "wait=5", wantStatus: 202},
		{name: "not asked", statusWait: 10 * time.Second, job: "running", wantStatus: 202},
		{name: "not a number", statusWait: 10 * time.Second, job: "running", prefer: "wait=soon", wantStatus: 202},
		{name: "complete answers at once", statusWait: 10 * time.Second, job: "done", prefer: "wait=5", wantStatus: 200},
		{name: "held for the wait asked", statusWait: 10 * time.Second, job: "running", prefer: "wait=1", wantStatus: 202, wantApplied: "wait=1"},
		{name: "capped at the server's limit", statusWait: time.Second, job: "running", prefer: "respond-async, wait=30", wantStatus: 202, wantApplied: "wait=1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := waitWorld(t, tc.statusWait)
			rec := getStatus(h, tc.job, tc.prefer)
			if rec.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.wantStatus, rec.Body)
			}
			if got := rec.Header().Get("Preference-Applied"); got != tc.wantApplied {
				t.Errorf("Preference-Applied %q, want %q", got, tc.wantApplied)
			}
			if ra := rec.Header().Get("Retry-After"); tc.wantStatus == 202 && ra == "" {
				t.Error("no Retry-After on a 202")
			}
		})
	}
}

// TestStatusWaitEndsWhenTheExportCompletes: a request held for a minute
// answers 200 with the manifest soon after the export completes, not when
// the minute is over.
func TestStatusWaitEndsWhenTheExportCompletes(t *testing.T) {
	h, store := waitWorld(t, time.Minute)
	for len(store.gets) > 0 {
		<-store.gets
	}
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- getStatus(h, "running", "wait=60") }()
	// Two reads of the job: the first look and a recheck, so the request
	// is being held.
	for range 2 {
		<-store.gets
	}
	complete(t, store, "running")
	select {
	case rec := <-done:
		if rec.Code != 200 {
			t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
		}
		if got := rec.Header().Get("Preference-Applied"); got != "wait=60" {
			t.Errorf("Preference-Applied %q, want wait=60", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the held request did not answer when the export completed")
	}
}
