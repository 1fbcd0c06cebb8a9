// Package dirstore is the embedded FileStore: exported files in a directory,
// downloaded through HMAC-signed links that expire with the job. A link is
// [base]/bulkfiles/{key}?exp={unix}&sig={hex}; only this server can make one,
// and it works without a bearer token (requiresAccessToken is false).
package dirstore

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/diskspace"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/gzfile"
)

// LinkPath is the path under the FHIR base where the API routes downloads
// (api.LinkPrefix, which a test of package api checks it equals; declared
// here so the store does not import the HTTP API for one constant).
const LinkPath = "/bulkfiles/"

// Store is a FileStore in a directory.
type Store struct {
	root   string
	secret []byte
	now    func() time.Time
	// minFree: writes fail (ENOSPC) once less than this is free, leaving
	// room for the job store to record what happened.
	minFree int64
	// maxLink caps a link's lifetime (links.go); 0: until the job expires.
	maxLink time.Duration
}

// SetMinFree makes writes fail with ENOSPC while less than n bytes are
// free on the store's filesystem (0: only when the disk is really full).
func (s *Store) SetMinFree(n int64) { s.minFree = n }

// checkFree fails when the store is below its free-space floor.
func (s *Store) checkFree() error {
	if s.minFree <= 0 {
		return nil
	}
	free, err := diskspace.Free(s.root)
	if err != nil {
		return err
	}
	if free < s.minFree {
		return fmt.Errorf("file store: %d bytes free, below the floor of %d: %w", free, s.minFree, syscall.ENOSPC)
	}
	return nil
}

var _ export.FileStore = (*Store)(nil)

// keyRE admits the keys the export steps make: slash-separated segments of
// letters, digits, '.', '-' and '_' that do not start with a dot.
var keyRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$`)

// Open uses root for files and keeps the link-signing secret in secretPath
// (created on first use), so links stay valid across restarts.
func Open(root, secretPath string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(root, ".tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("file store: %w", err)
	}
	secret, err := os.ReadFile(secretPath)
	if errors.Is(err, os.ErrNotExist) {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("file store: secret: %w", err)
		}
		if err := os.WriteFile(secretPath, secret, 0o600); err != nil {
			return nil, fmt.Errorf("file store: write secret: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("file store: read secret: %w", err)
	}
	if len(secret) < 16 {
		return nil, fmt.Errorf("file store: secret in %s is too short", secretPath)
	}
	return &Store{root: root, secret: secret, now: time.Now}, nil
}

// RemoveTemp deletes the temporary files of writes that never committed
// (a crash mid-export leaves them in ROOT/.tmp). Call it only while no
// writer uses the store: at start-up, under the job store's lock.
func (s *Store) RemoveTemp() (int, error) {
	dir := filepath.Join(s.root, ".tmp")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// JobBytes is the size of the files stored for a job.
func (s *Store) JobBytes(jobID string) (int64, error) {
	p, err := s.path(jobID)
	if err != nil {
		return 0, err
	}
	var n int64
	err = filepath.WalkDir(p, func(_ string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			if info, err := e.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	return n, err
}

// JobIDs lists the jobs that have files in the store.
func (s *Store) JobIDs() ([]string, error) {
	entries, err := os.ReadDir(s.root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != ".tmp" && keyRE.MatchString(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

func (s *Store) path(key string) (string, error) {
	if !keyRE.MatchString(key) {
		return "", fmt.Errorf("invalid file key %q", key)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Create implements export.FileStore: it writes to a temporary file and
// renames it into place on Commit.
func (s *Store) Create(_ context.Context, key string) (export.FileWriter, error) {
	final, err := s.path(key)
	if err != nil {
		return nil, err
	}
	if err := s.checkFree(); err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	f, err := os.CreateTemp(filepath.Join(s.root, ".tmp"), "part-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", key, err)
	}
	buf := writeBuffers.Get().(*bufio.Writer)
	buf.Reset(f)
	w := &writer{s: s, f: f, buf: buf, final: final}
	w.out = w.buf
	if gzfile.Compressed(key) {
		w.zw = gzfile.NewWriter(w.buf)
		w.out = w.zw
	}
	return w, nil
}

// writeBuffers holds the writers' 256 KiB buffers between files.
var writeBuffers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 256<<10) }}

type writer struct {
	s   *Store
	f   *os.File
	buf *bufio.Writer
	// zw compresses NDJSON files into buf (gzfile); out is zw or buf.
	zw    *gzfile.Writer
	out   io.Writer
	final string
	// unchecked counts bytes written since the last free-space check.
	unchecked int
}

func (w *writer) Write(p []byte) (int, error) {
	if w.unchecked += len(p); w.unchecked >= 256<<10 {
		w.unchecked = 0
		if err := w.s.checkFree(); err != nil {
			return 0, err
		}
	}
	return w.out.Write(p)
}

func (w *writer) Commit() error {
	if w.buf == nil {
		return fmt.Errorf("commit %s: already committed or aborted", w.final)
	}
	var err error
	if w.zw != nil {
		err = w.zw.Close()
	}
	if err == nil {
		err = w.buf.Flush()
	}
	w.release()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.MkdirAll(filepath.Dir(w.final), 0o700)
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.final)
	}
	if err != nil {
		os.Remove(w.f.Name())
		return fmt.Errorf("commit %s: %w", w.final, err)
	}
	return nil
}

// release hands the buffer back (a write after it fails).
func (w *writer) release() {
	if w.buf == nil {
		return
	}
	w.buf.Reset(nil)
	writeBuffers.Put(w.buf)
	w.buf, w.out = nil, errWriter{}
}

// errWriter is a released writer's output.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("write after commit or abort") }

func (w *writer) Abort() error {
	w.release()
	w.f.Close()
	return os.Remove(w.f.Name())
}

// Open implements export.FileStore.
func (s *Store) Open(_ context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	rc, err := gzfile.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	return rc, nil
}

// DeleteJob implements export.FileStore.
func (s *Store) DeleteJob(_ context.Context, jobID string) error {
	p, err := s.path(jobID)
	if err != nil || strings.Contains(jobID, "/") {
		return fmt.Errorf("delete job files: invalid job id %q", jobID)
	}
	return os.RemoveAll(p)
}

func (s *Store) sign(key string, exp int64) string {
	m := hmac.New(sha256.New, s.secret)
	fmt.Fprintf(m, "%s\n%d", key, exp)
	return hex.EncodeToString(m.Sum(nil))
}

// URL implements export.FileStore. The link is rooted at the request's FHIR
// base URL (export.BaseURL).
func (s *Store) URL(ctx context.Context, key string, expires time.Time) (string, error) {
	if _, err := s.path(key); err != nil {
		return "", err
	}
	base := export.BaseURL(ctx)
	if base == "" {
		return "", errors.New("file link: no base URL in context")
	}
	exp := s.linkExpiry(expires).Unix()
	return fmt.Sprintf("%s%s%s?exp=%d&sig=%s", strings.TrimSuffix(base, "/"), LinkPath, key, exp, s.sign(key, exp)), nil
}

// ServeFile answers a download of key with the link's query: 403 for a
// signature that does not match, 404 for an expired link or a missing file.
// The body is application/fhir+ndjson, gzip-encoded when the client accepts
// gzip; otherwise ranges are supported.
func (s *Store) ServeFile(w http.ResponseWriter, r *http.Request, key string, q url.Values) {
	exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
	sig, herr := hex.DecodeString(q.Get("sig"))
	if err != nil || herr != nil || !keyRE.MatchString(key) {
		writeOutcome(w, http.StatusForbidden, fhir.CodeSecurity, "this download link is not valid")
		return
	}
	want, _ := hex.DecodeString(s.sign(key, exp))
	if !hmac.Equal(sig, want) {
		writeOutcome(w, http.StatusForbidden, fhir.CodeSecurity, "this download link is not valid")
		return
	}
	if s.now().Unix() > exp {
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "this download link has expired; request the status URL again or start a new export")
		return
	}
	w.Header().Set("Expires", time.Unix(exp, 0).UTC().Format(http.TimeFormat))
	s.serve(w, r, key)
}

// DeliverFile implements api.FileDeliverer (redirect mode: the API has
// authorized the download): the file streamed as ServeFile does.
func (s *Store) DeliverFile(w http.ResponseWriter, r *http.Request, key string) {
	if !keyRE.MatchString(key) {
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "file not found")
		return
	}
	s.serve(w, r, key)
}

// serve answers a download of a valid key.
func (s *Store) serve(w http.ResponseWriter, r *http.Request, key string) {
	p, _ := s.path(key)
	f, err := os.Open(p)
	if err != nil {
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "file not found (the export was cancelled or has expired)")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "file not found")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/fhir+ndjson")
	h.Set("Vary", "Accept-Encoding")
	h.Set("Cache-Control", "private, no-store")
	var head [2]byte
	if n, _ := f.ReadAt(head[:], 0); gzfile.IsGzip(head[:n]) {
		s.serveCompressed(w, r, f, st)
		return
	}
	// A file stored plain (before compression): compressed on the fly.
	if gzfile.Accepted(r.Header.Values("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		if r.Method == http.MethodHead {
			return
		}
		gz := gzfile.NewWriter(w)
		bw := bufio.NewWriterSize(gz, 64<<10)
		if _, err := bw.ReadFrom(f); err == nil {
			_ = bw.Flush()
		}
		_ = gz.Close()
		return
	}
	serveRange(w, r, st, st.Size(), f)
}

// serveCompressed answers a download of a file stored compressed: its
// bytes as they are (Content-Encoding: gzip) to a client that accepts
// gzip, else decompressed while streaming. Ranges apply to what is sent.
func (s *Store) serveCompressed(w http.ResponseWriter, r *http.Request, f *os.File, st os.FileInfo) {
	if gzfile.Accepted(r.Header.Values("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", gzfile.Encoding)
		serveRange(w, r, st, st.Size(), f)
		return
	}
	size, err := gzfile.PlainSize(f, st.Size())
	if err != nil {
		writeOutcome(w, http.StatusInternalServerError, fhir.CodeException, "the stored file is damaged")
		return
	}
	serveRange(w, r, st, size, gzfile.NewPlain(f, size))
}

// serveRange answers with content of size bytes, honouring a valid Range.
func serveRange(w http.ResponseWriter, r *http.Request, st os.FileInfo, size int64, content io.ReadSeeker) {
	if rng := r.Header.Get("Range"); rng != "" {
		if msg := checkRange(rng, size); msg != "" {
			w.Header().Del("Content-Encoding")
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			writeOutcome(w, http.StatusRequestedRangeNotSatisfiable, fhir.CodeValue, "Range: "+msg)
			return
		}
	}
	http.ServeContent(w, r, "", st.ModTime(), content)
}

// MaxRanges is the most byte ranges one download may ask for: each range
// is a multipart section, so thousands of one-byte ranges would amplify.
const MaxRanges = 4

// checkRange validates a Range header (RFC 9110 byte ranges) against a file
// of size bytes, before http.ServeContent answers it in plain text. It
// returns why the header is refused, or "".
func checkRange(h string, size int64) string {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if !ok {
		return "only bytes ranges are supported (bytes=first-last)"
	}
	parts := strings.Split(spec, ",")
	if len(parts) > MaxRanges {
		return fmt.Sprintf("at most %d ranges per request, got %d", MaxRanges, len(parts))
	}
	satisfiable := false
	for _, p := range parts {
		p = strings.TrimSpace(p)
		first, last, ok := strings.Cut(p, "-")
		if !ok {
			return fmt.Sprintf("%q is not a byte range", clip(p))
		}
		switch {
		case first == "":
			n, err := strconv.ParseInt(last, 10, 64)
			if err != nil || n < 0 {
				return fmt.Sprintf("%q is not a byte range", clip(p))
			}
			if n > 0 && size > 0 {
				satisfiable = true
			}
		default:
			a, err := strconv.ParseInt(first, 10, 64)
			if err != nil || a < 0 {
				return fmt.Sprintf("%q is not a byte range", clip(p))
			}
			if last != "" {
				b, err := strconv.ParseInt(last, 10, 64)
				if err != nil || b < a {
					return fmt.Sprintf("%q is not a byte range", clip(p))
				}
			}
			if a < size {
				satisfiable = true
			}
		}
	}
	if !satisfiable {
		return fmt.Sprintf("no range starts inside the file (%d bytes)", size)
	}
	return ""
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

func writeOutcome(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	w.Write(fhir.Outcome(fhir.SeverityError, code, msg).JSON())
}
