package dirstore

import (
	"context"
	"encoding/json"
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

const fileBody = `{"resourceType":"Patient","id":"1"}` + "\n" + `{"resourceType":"Patient","id":"2"}` + "\n"

// newDownload returns a store holding one file and a valid link to it.
func newDownload(t testing.TB) (*Store, string) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := export.WithBaseURL(context.Background(), "http://h/fhir")
	w, _ := s.Create(ctx, "job/u/Patient.0000.ndjson")
	w.Write([]byte(fileBody))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	link, err := s.URL(ctx, "job/u/Patient.0000.ndjson", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return s, link
}

func get(s *Store, link string, header http.Header) *httptest.ResponseRecorder {
	u, _ := url.Parse(link)
	r := httptest.NewRequest(http.MethodGet, link, nil)
	r.Header = header
	rec := httptest.NewRecorder()
	s.ServeFile(rec, r, strings.TrimPrefix(u.Path, "/fhir"+LinkPath), u.Query())
	return rec
}

func TestRanges(t *testing.T) {
	s, link := newDownload(t)
	size := len(fileBody)
	tests := []struct {
		name   string
		rng    string
		status int
		want   string // body (206/200) or a substring of the OperationOutcome
	}{
		{"first bytes", "bytes=0-9", 206, fileBody[:10]},
		{"suffix", "bytes=-5", 206, fileBody[size-5:]},
		{"open end", "bytes=10-", 206, fileBody[10:]},
		{"four ranges", "bytes=0-1,3-4,6-7,9-10", 206, "multipart"},
		{"five ranges", "bytes=0-0,1-1,2-2,3-3,4-4", 416, "at most 4 ranges"},
		{"two thousand ranges", "bytes=" + strings.Repeat("0-0,", 1999) + "0-0", 416, "at most 4 ranges"},
		{"past the end", "bytes=9999-", 416, "no range starts inside"},
		{"reversed", "bytes=9-2", 416, "not a byte range"},
		{"garbage", "bytes=abc", 416, "not a byte range"},
		{"other unit", "items=0-1", 416, "only bytes ranges"},
		{"negative", "bytes=-1-2", 416, "not a byte range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(s, link, http.Header{"Range": {tc.rng}})
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			body := rec.Body.String()
			switch {
			case tc.status == 416:
				var oo struct{ ResourceType string }
				if json.Unmarshal(rec.Body.Bytes(), &oo) != nil || oo.ResourceType != "OperationOutcome" || !strings.Contains(body, tc.want) {
					t.Errorf("body %s, want an OperationOutcome mentioning %q", body, tc.want)
				}
				if rec.Header().Get("Content-Range") != "bytes */"+strconv.Itoa(size) {
					t.Errorf("Content-Range = %q", rec.Header().Get("Content-Range"))
				}
			case tc.want == "multipart":
				if !strings.HasPrefix(rec.Header().Get("Content-Type"), "multipart/byteranges") {
					t.Errorf("Content-Type = %q", rec.Header().Get("Content-Type"))
				}
			case body != tc.want:
				t.Errorf("body %q, want %q", body, tc.want)
			}
		})
	}
}

// FuzzDownload: whatever key, query and headers a download carries, the
// answer is the file, a part of it, or a 4xx OperationOutcome; never a 5xx
// or a panic, and never a file other than the one signed.
func FuzzDownload(f *testing.F) {
	for _, s := range [][4]string{
		{"job/u/Patient.0000.ndjson", "", "bytes=0-3", ""},
		{"job/u/Patient.0000.ndjson", "", "bytes=0-0,1-1,2-2,3-3,4-4", "gzip"},
		{"../secret", "exp=1&sig=00", "", ""},
		{"job/u/Patient.0000.ndjson", "exp=99999999999&sig=zz", "bytes=-0", "gzip;q=0"},
		{"job", "", "bytes=5-2", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	s, link := newDownload(f)
	u, _ := url.Parse(link)
	f.Fuzz(func(t *testing.T, key, rawQuery, rng, enc string) {
		if rawQuery == "" {
			rawQuery = u.RawQuery // the valid signature, with any key and headers
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "http://h/fhir/bulkfiles/x", nil)
		r.Header.Set("Range", rng)
		r.Header.Set("Accept-Encoding", enc)
		rec := httptest.NewRecorder()
		s.ServeFile(rec, r, key, q)
		switch {
		case rec.Code >= 500:
			t.Fatalf("status %d", rec.Code)
		case rec.Code >= 400:
			var oo struct{ ResourceType string }
			if json.Unmarshal(rec.Body.Bytes(), &oo) != nil || oo.ResourceType != "OperationOutcome" {
				t.Fatalf("%d without an OperationOutcome: %q", rec.Code, rec.Body)
			}
		case key != "job/u/Patient.0000.ndjson":
			t.Fatalf("served %q with the signature of another key", key)
		}
	})
}
