package dirstore

import (
	"context"
	"fmt"
	"io"
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

// TestWritersReuseBuffers: files written in turn through pooled buffers
// and compressors hold their own content, plain and compressed, after an
// aborted file; a writer refuses writes and a second Commit once done.
func TestWritersReuseBuffers(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	aborted, _ := s.Create(ctx, "job/Aborted.ndjson")
	aborted.Write([]byte(strings.Repeat("half-written line\n", 100)))
	if err := aborted.Abort(); err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"job/A.ndjson", "job/plan.json", "job/B.ndjson", "job/C.ndjson"} {
		content := strings.Repeat(fmt.Sprintf(`{"resourceType":"Patient","id":"%d"}`+"\n", i), 1000*i)
		w, err := s.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte("late")); err == nil {
			t.Errorf("%s: write after Commit succeeded", key)
		}
		if err := w.Commit(); err == nil {
			t.Errorf("%s: second Commit succeeded", key)
		}
		rc, err := s.Open(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if string(got) != content {
			t.Errorf("%s: read %d bytes, want the %d written", key, len(got), len(content))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "files", "job", "Aborted.ndjson")); !os.IsNotExist(err) {
		t.Errorf("aborted file: %v, want none", err)
	}
}
