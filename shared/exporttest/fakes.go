// Package exporttest provides in-memory fakes of the export ports for unit
// tests, like net/http/httptest does for HTTP. They follow the port
// contracts (conditional transitions, commit-on-close files) but persist
// nothing.
package exporttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// JobStore is an in-memory export.JobStore.
type JobStore struct {
	mu    sync.Mutex
	jobs  map[string]export.Job
	units map[string]map[string]export.UnitProgress
	files map[string]map[string]export.File
	// keys caches each job's file keys in order for FilesAfter (nil when
	// a file was added since).
	keys map[string][]string
	// queued maps export.QueueKey → job id; admitted holds the jobs given
	// a running place (queue.go).
	queued   map[string]string
	admitted map[string]bool
}

var (
	_ export.JobStore      = (*JobStore)(nil)
	_ export.CappedCreator = (*JobStore)(nil)
	_ export.FilePager     = (*JobStore)(nil)
)

// NewJobStore returns an empty store.
func NewJobStore() *JobStore {
	return &JobStore{jobs: map[string]export.Job{}, units: map[string]map[string]export.UnitProgress{}, files: map[string]map[string]export.File{}}
}

func clone(j export.Job) *export.Job {
	c := j
	if j.Plan != nil {
		p := *j.Plan
		p.Types = append([]string(nil), p.Types...)
		c.Plan = &p
	}
	return &c
}

// Create implements export.JobStore.
func (s *JobStore) Create(_ context.Context, j *export.Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.jobs[j.ID]; ok {
		return export.ErrJobExists
	}
	s.jobs[j.ID] = *clone(*j)
	return nil
}

// CreateCapped implements export.CappedCreator.
func (s *JobStore) CreateCapped(_ context.Context, j *export.Job, maxLive int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.jobs[j.ID]; ok {
		return export.ErrJobExists
	}
	n := 0
	for _, o := range s.jobs {
		if o.Owner == j.Owner && o.Status.Live() {
			n++
		}
	}
	if n >= maxLive {
		return export.ErrTooManyLive
	}
	s.jobs[j.ID] = *clone(*j)
	return nil
}

// Get implements export.JobStore.
func (s *JobStore) Get(_ context.Context, id string) (*export.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return nil, export.ErrJobNotFound
	}
	return clone(j), nil
}

// Transition implements export.JobStore.
func (s *JobStore) Transition(_ context.Context, id string, t export.Transition) (*export.Job, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return nil, export.ErrJobNotFound
	}
	if !t.Allows(j.Status) {
		return nil, &export.ConflictError{JobID: id, Current: j.Status}
	}
	c := clone(j)
	t.Apply(c, time.Now())
	s.jobs[id] = *c
	return clone(*c), nil
}

// SaveProgress implements export.JobStore.
func (s *JobStore) SaveProgress(_ context.Context, id, unit string, p export.UnitProgress) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return export.ErrJobNotFound
	}
	if j.Status != export.StatusInProgress {
		return &export.ConflictError{JobID: id, Current: j.Status}
	}
	if s.units[id] == nil {
		s.units[id] = map[string]export.UnitProgress{}
	}
	s.units[id][unit] = p
	return nil
}

// Progress implements export.JobStore.
func (s *JobStore) Progress(_ context.Context, id string) (map[string]export.UnitProgress, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]export.UnitProgress{}
	for k, v := range s.units[id] {
		out[k] = v
	}
	return out, nil
}

// PutFile implements export.JobStore.
func (s *JobStore) PutFile(_ context.Context, id string, f export.File) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	j, ok := s.jobs[id]
	if !ok {
		return export.ErrJobNotFound
	}
	if !j.Status.Live() {
		return &export.ConflictError{JobID: id, Current: j.Status}
	}
	if s.files[id] == nil {
		s.files[id] = map[string]export.File{}
	}
	s.files[id][f.Key] = f
	delete(s.keys, id)
	return nil
}

// Files implements export.JobStore.
func (s *JobStore) Files(_ context.Context, id string) ([]export.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []export.File
	for _, f := range s.files[id] {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// FilesAfter implements export.FilePager.
func (s *JobStore) FilesAfter(_ context.Context, id, after string, limit int) ([]export.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[string][]string{}
	}
	keys, ok := s.keys[id]
	if !ok {
		for k := range s.files[id] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s.keys[id] = keys
	}
	var out []export.File
	for i := sort.SearchStrings(keys, after); i < len(keys) && len(out) < limit; i++ {
		if keys[i] > after {
			out = append(out, s.files[id][keys[i]])
		}
	}
	return out, nil
}

// CountLive implements export.JobStore.
func (s *JobStore) CountLive(_ context.Context, owner string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, j := range s.jobs {
		if j.Owner == owner && j.Status.Live() {
			n++
		}
	}
	return n, nil
}

// FileStore is an in-memory export.FileStore.
type FileStore struct {
	mu      sync.Mutex
	Objects map[string][]byte
	// FailCommits makes the next n commits fail (to test retries).
	FailCommits int
}

var _ export.FileStore = (*FileStore)(nil)

// NewFileStore returns an empty store.
func NewFileStore() *FileStore { return &FileStore{Objects: map[string][]byte{}} }

type fileWriter struct {
	s   *FileStore
	key string
	buf bytes.Buffer
}

func (w *fileWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }
func (w *fileWriter) Abort() error                { return nil }
func (w *fileWriter) Commit() error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if w.s.FailCommits > 0 {
		w.s.FailCommits--
		return fmt.Errorf("injected commit failure for %s", w.key)
	}
	w.s.Objects[w.key] = append([]byte(nil), w.buf.Bytes()...)
	return nil
}

// Create implements export.FileStore.
func (s *FileStore) Create(_ context.Context, key string) (export.FileWriter, error) {
	return &fileWriter{s: s, key: key}, nil
}

// URL implements export.FileStore.
func (s *FileStore) URL(_ context.Context, key string, exp time.Time) (string, error) {
	return "https://files.test/" + key + "?exp=" + strconv.FormatInt(exp.Unix(), 10), nil
}

// Open implements export.FileStore.
func (s *FileStore) Open(_ context.Context, key string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.Objects[key]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", key, fs.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// DeleteJob implements export.FileStore.
func (s *FileStore) DeleteJob(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.Objects {
		if strings.HasPrefix(k, id+"/") {
			delete(s.Objects, k)
		}
	}
	return nil
}

// Snapshot returns a copy of the objects.
func (s *FileStore) Snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for k, v := range s.Objects {
		out[k] = string(v)
	}
	return out
}

// Source is an in-memory export.Source of NDJSON lines per type; each type
// is one segment and the cursor is a line index.
type Source struct {
	Lines map[string][]string
	// Groups maps a Group id to its member patient ids.
	Groups map[string][]string
}

var _ export.Source = (*Source)(nil)

// Caps implements export.Source.
func (s *Source) Caps() export.SourceCaps { return export.SourceCaps{} }

// Types implements export.Source.
func (s *Source) Types(context.Context) ([]string, error) {
	var out []string
	for t := range s.Lines {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}

// GroupMembers implements export.Source.
func (s *Source) GroupMembers(_ context.Context, id string) ([]string, error) {
	m, ok := s.Groups[id]
	if !ok {
		return nil, export.ErrGroupNotFound
	}
	return m, nil
}

// MissingPatients implements export.Source.
func (s *Source) MissingPatients(context.Context, []string) ([]string, error) { return nil, nil }

// Plan implements export.Source.
func (s *Source) Plan(_ context.Context, _ export.Query, t string) ([]string, error) {
	if len(s.Lines[t]) == 0 {
		return nil, nil
	}
	return []string{"all"}, nil
}

// Open implements export.Source.
func (s *Source) Open(_ context.Context, _ export.Query, t, _, cursor string) (export.Reader, error) {
	i := 0
	if cursor != "" {
		var err error
		if i, err = strconv.Atoi(cursor); err != nil {
			return nil, err
		}
	}
	return &reader{lines: s.Lines[t], i: i}, nil
}

type reader struct {
	lines []string
	i     int
}

func (r *reader) Next() ([]byte, error) {
	if r.i >= len(r.lines) {
		return nil, io.EOF
	}
	l := r.lines[r.i]
	r.i++
	if !strings.HasPrefix(l, "{") {
		return nil, &export.BadRecordError{Position: "line " + strconv.Itoa(r.i), Reason: "not JSON"}
	}
	return []byte(l), nil
}
func (r *reader) Cursor() string { return strconv.Itoa(r.i) }
func (r *reader) Close() error   { return nil }
