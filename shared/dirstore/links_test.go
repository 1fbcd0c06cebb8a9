package dirstore

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// TestLinkLifetime: with a retention longer than the link lifetime, each
// link is valid for its whole stated lifetime and not after, and a link
// made after it ended (a status poll) works.
func TestLinkLifetime(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	s.SetMaxLinkLifetime(12 * time.Hour)
	t0 := time.Now().Truncate(time.Second)
	now := t0
	s.now = func() time.Time { return now }
	ctx := export.WithBaseURL(context.Background(), "http://h/fhir")
	w, _ := s.Create(ctx, "job/Patient.0000.ndjson")
	w.Write([]byte(`{"resourceType":"Patient","id":"1"}` + "\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	status := func(link string, at time.Time) int {
		now = at
		u, _ := url.Parse(link)
		rec := httptest.NewRecorder()
		s.ServeFile(rec, httptest.NewRequest(http.MethodGet, link, nil), strings.TrimPrefix(u.Path, "/fhir"+LinkPath), u.Query())
		return rec.Code
	}
	end := func(link string) time.Time {
		u, _ := url.Parse(link)
		n, _ := strconv.ParseInt(u.Query().Get("exp"), 10, 64)
		return time.Unix(n, 0)
	}
	for _, tc := range []struct {
		name      string
		retention time.Duration
		wantEnd   time.Duration
	}{
		{"retention within the lifetime", 2 * time.Hour, 2 * time.Hour},
		{"retention longer than the lifetime", 30 * time.Hour, 12 * time.Hour},
	} {
		now = t0
		expires := t0.Add(tc.retention)
		link, err := s.URL(ctx, "job/Patient.0000.ndjson", expires)
		if err != nil {
			t.Fatal(err)
		}
		if got := end(link).Sub(t0); got != tc.wantEnd {
			t.Errorf("%s: link valid for %s, want %s", tc.name, got, tc.wantEnd)
		}
		if got := status(link, end(link)); got != 200 {
			t.Errorf("%s: at its stated end the link gets %d", tc.name, got)
		}
		after := end(link).Add(time.Second)
		if got := status(link, after); got != 404 {
			t.Errorf("%s: after its end the link gets %d, want 404", tc.name, got)
		}
		if after.Before(expires) {
			fresh, _ := s.URL(ctx, "job/Patient.0000.ndjson", expires)
			if got := status(fresh, after); got != 200 || !end(fresh).After(after) {
				t.Errorf("%s: the link of a later poll gets %d (ends %s)", tc.name, got, end(fresh))
			}
		}
	}
}
