package dirstore

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// TestCompressedFiles: NDJSON files are stored gzip-compressed; a client
// accepting gzip gets those bytes with Content-Encoding: gzip, one that
// does not gets the plain NDJSON (ranges too); both give the same lines;
// Open reads plain; a file stored plain before still serves.
func TestCompressedFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := export.WithBaseURL(context.Background(), "http://h/fhir")
	var want bytes.Buffer
	for i := 0; i < 2000; i++ {
		want.WriteString(`{"resourceType":"Observation","id":"o` + strings.Repeat("x", i%7) + `","status":"final","code":{"text":"heart rate"}}` + "\n")
	}
	key := "job/Observation.0000.ndjson"
	w, _ := s.Create(ctx, key)
	w.Write(want.Bytes())
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "files", "job", "Observation.0000.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) < 2 || raw[0] != 0x1f || raw[1] != 0x8b || len(raw)*5 > want.Len() {
		t.Fatalf("stored %d bytes for %d plain, want a gzip stream well under a fifth", len(raw), want.Len())
	}
	rc, err := s.Open(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(rc); !bytes.Equal(got, want.Bytes()) {
		t.Error("Open does not read the plain content")
	}
	rc.Close()

	link, _ := s.URL(ctx, key, time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name, enc, rng string
		wantEnc        string
		wantBody       []byte
		status         int
	}{
		{"gzip client (bulk-data-client, bulkfhir export)", "gzip, deflate, br", "", "gzip", want.Bytes(), 200},
		{"no Accept-Encoding", "", "", "", want.Bytes(), 200},
		{"gzip refused", "gzip;q=0, identity", "", "", want.Bytes(), 200},
		{"plain range", "", "bytes=100-199", "", want.Bytes()[100:200], 206},
		{"plain range from the end", "", "bytes=-50", "", want.Bytes()[want.Len()-50:], 206},
		{"gzip range of the stored bytes", "gzip", "bytes=0-9", "gzip", raw[:10], 206},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.enc != "" {
				h.Set("Accept-Encoding", tc.enc)
			}
			if tc.rng != "" {
				h.Set("Range", tc.rng)
			}
			rec := get(s, link, h)
			if rec.Code != tc.status || rec.Header().Get("Content-Encoding") != tc.wantEnc {
				t.Fatalf("status %d Content-Encoding %q, want %d %q", rec.Code, rec.Header().Get("Content-Encoding"), tc.status, tc.wantEnc)
			}
			body := rec.Body.Bytes()
			if tc.wantEnc == "gzip" && tc.rng == "" {
				if !bytes.Equal(body, raw) {
					t.Error("the gzip client did not get the stored bytes")
				}
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				body, _ = io.ReadAll(zr)
			}
			if !bytes.Equal(body, tc.wantBody) {
				t.Errorf("body: %d bytes, want %d", len(body), len(tc.wantBody))
			}
		})
	}

	// A plain file from before compression is served as it was.
	old := filepath.Join(dir, "files", "job", "Patient.0000.ndjson")
	os.WriteFile(old, []byte(fileBody), 0o600)
	oldLink, _ := s.URL(ctx, "job/Patient.0000.ndjson", time.Now().Add(time.Hour))
	if rec := get(s, oldLink, http.Header{}); rec.Body.String() != fileBody {
		t.Errorf("plain file: %q", rec.Body)
	}
}
