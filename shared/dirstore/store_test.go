package dirstore

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

func TestLinks(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := export.WithBaseURL(context.Background(), "http://h/fhir")
	w, _ := s.Create(ctx, "job/u/Patient.0000.ndjson")
	w.Write([]byte(`{"resourceType":"Patient","id":"1"}` + "\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	aborted, _ := s.Create(ctx, "job/u/Patient.0001.ndjson")
	aborted.Write([]byte("partial"))
	aborted.Abort()

	serve := func(link string, now time.Time) int {
		s.now = func() time.Time { return now }
		u, err := url.Parse(link)
		if err != nil {
			t.Fatal(err)
		}
		key := strings.TrimPrefix(u.Path, "/fhir"+LinkPath)
		rec := httptest.NewRecorder()
		s.ServeFile(rec, httptest.NewRequest(http.MethodGet, link, nil), key, u.Query())
		return rec.Code
	}
	exp := time.Now().Add(time.Hour)
	link, err := s.URL(ctx, "job/u/Patient.0000.ndjson", exp)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := s.URL(ctx, "job/u/Patient.0001.ndjson", exp)
	tests := []struct {
		name string
		link string
		now  time.Time
		want int
	}{
		{"valid", link, time.Now(), 200},
		{"expired", link, exp.Add(2 * time.Second), 404},
		{"tampered signature", strings.Replace(link, "sig=", "sig=ab", 1), time.Now(), 403},
		{"extended expiry", strings.Replace(link, "exp=", "exp=9", 1), time.Now(), 403},
		{"aborted file", other, time.Now(), 404},
		{"traversal", "http://h/fhir/bulkfiles/../secret?exp=1&sig=00", time.Now(), 403},
	}
	for _, tc := range tests {
		if got := serve(tc.link, tc.now); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}
	if _, err := s.Create(ctx, "../escape"); err == nil {
		t.Error("created a file outside the store")
	}
	// The secret survives a restart, so links stay valid.
	s2, _ := Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if l2, _ := s2.URL(ctx, "job/u/Patient.0000.ndjson", exp); l2 != link {
		t.Errorf("link changed across reopen")
	}
	if err := s.DeleteJob(ctx, "job"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "files", "job")); !os.IsNotExist(err) {
		t.Errorf("job files still there: %v", err)
	}
}
