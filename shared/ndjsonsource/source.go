// Package ndjsonsource is the Source over NDJSON files: every *.ndjson
// object below a directory (or, through package s3source, an S3 prefix), one
// resource per line, any mix of types per file. An index (types, line
// counts and byte spans per object) is built on first use and refreshed
// when an object's size or version changes; on object stores, objects
// named after their type are indexed by name instead of read. Large files are planned as byte-range segments aligned to line
// starts, so one type fans out into parallel units; a cursor is the byte
// offset of the next line.
//
// Filters: resourceType, meta.lastUpdated after _since and not after the
// upper bound (resources without lastUpdated are always included), at
// patient and group level membership in the Patient compartment of the
// selected patients, and _typeFilter, evaluated on each line by package
// typefilter (R4 search semantics; parameters it cannot evaluate are refused
// at kick-off through CheckTypeFilter).
package ndjsonsource

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/searchparam"
	"github.com/bulkfhir/bulkfhir/shared/typefilter"
)

// DefaultSegmentBytes is the size of the byte ranges a large file is split into.
const DefaultSegmentBytes = 32 << 20

// maxLine bounds one resource line (a larger line is reported as a bad record).
const maxLine = 256 << 20

// Source reads resources from NDJSON objects.
type Source struct {
	objs         Objects
	segmentBytes int64
	typesByName  bool

	mu    sync.Mutex
	files map[string]*fileIndex // by object name
	// gen counts index changes; members caches Group members for the
	// generation it was read in, so chunks do not re-read Groups.
	gen     int
	members map[string]groupMembers

	// pidx keeps the patient indexes (nil: none, patient-level exports
	// read whole objects); fences caches their fences by object name.
	pidx   IndexStore
	fences map[string]*fence
	// read counts the bytes read from the objects.
	read atomic.Int64
}

type groupMembers struct {
	gen int
	ids []string
}

var _ export.Source = (*Source)(nil)

type fileIndex struct {
	version string
	size    int64
	types   map[string]*span
	// primary is the type whose units report the file's bad lines, so each
	// bad line is reported once (see index).
	primary string
}

type span struct {
	count      int64 // -1 when the object was typed by its name, not scanned
	start, end int64 // from the first line of the type to the end of its last
}

// Options tune a Source.
type Options struct {
	// SegmentBytes is the size of the byte ranges large objects are split
	// into (default DefaultSegmentBytes).
	SegmentBytes int64
	// TypesByName types an object named "<Type>.….ndjson" (or
	// "<Type>/….ndjson") by its name instead of reading it, for object
	// stores where reading everything to index it is too slow. Objects
	// without a type in their name are still scanned.
	TypesByName bool
	// Index, when set, keeps a patient index per object (see IndexStore),
	// so Patient and Group exports read only their patients' byte ranges.
	Index IndexStore
}

// New returns a source over a local directory. segmentBytes ≤ 0 takes the
// default.
func New(dir string, segmentBytes int64) (*Source, error) {
	return NewDir(dir, Options{SegmentBytes: segmentBytes})
}

// NewDir returns a source over a local directory with opts.
func NewDir(dir string, opts Options) (*Source, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ndjson source: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("ndjson source: %s is not a directory", dir)
	}
	return NewFromObjects(Dir(dir), opts), nil
}

// NewFromObjects returns a source over any Objects.
func NewFromObjects(objs Objects, opts Options) *Source {
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	s := &Source{segmentBytes: opts.SegmentBytes, typesByName: opts.TypesByName,
		files: map[string]*fileIndex{}, members: map[string]groupMembers{},
		pidx: opts.Index, fences: map[string]*fence{}}
	s.objs = byteCounter{objs, &s.read}
	return s
}

// BytesRead is how many bytes the source has read from its objects so far
// (not counting patient indexes).
func (s *Source) BytesRead() int64 { return s.read.Load() }

// byteCounter counts the bytes read through Open.
type byteCounter struct {
	Objects
	n *atomic.Int64
}

func (c byteCounter) Open(ctx context.Context, name, version string, start, end int64) (io.ReadCloser, error) {
	rc, err := c.Objects.Open(ctx, name, version, start, end)
	if err != nil {
		return nil, err
	}
	return &byteCountingReader{rc, c.n}, nil
}

type byteCountingReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *byteCountingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// Generation counts the changes the source has seen to its objects; it
// moves when a refresh re-indexes a changed, new or removed object.
func (s *Source) Generation() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// Caps implements export.Source.
func (s *Source) Caps() export.SourceCaps { return export.SourceCaps{TypeFilter: true} }

var _ export.TypeFilterChecker = (*Source)(nil)

// CheckTypeFilter implements export.TypeFilterChecker.
func (s *Source) CheckTypeFilter(typ, query string) (string, []error) {
	kept, problems := typefilter.Check(typ, query)
	errs := make([]error, len(problems))
	for i, p := range problems {
		errs[i] = p
	}
	return kept, errs
}

// SearchParams lists, per type, the search parameters _typeFilter can use
// on this source (for the CapabilityStatement).
func (s *Source) SearchParams(typ string) []searchparam.Param { return typefilter.Supported(typ) }

// refresh brings the index up to date and returns a snapshot of it.
func (s *Source) refresh(ctx context.Context) (map[string]*fileIndex, error) {
	list, err := s.objs.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list source objects: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := make(map[string]*fileIndex, len(list))
	for _, o := range list {
		idx := s.files[o.Name]
		if idx == nil || idx.version != o.Version || idx.size != o.Size {
			if idx, err = s.index(ctx, o); err != nil {
				return nil, fmt.Errorf("index %s: %w", o.Name, err)
			}
			s.files[o.Name] = idx
			s.gen++
		}
		snap[o.Name] = idx
	}
	for name := range s.files {
		if snap[name] == nil {
			delete(s.files, name)
			s.gen++
		}
	}
	return snap, nil
}

var typeInName = regexp.MustCompile(`^([A-Z][A-Za-z]+)(?:[._-][^/]*)?\.ndjson$`)

// indexed returns the index entry of an object, listing the objects only
// when it is not known yet (a new process): an export chunk opens a segment
// of an object Plan indexed, and must not list the whole source again.
func (s *Source) indexed(ctx context.Context, name string) (*fileIndex, error) {
	s.mu.Lock()
	idx := s.files[name]
	s.mu.Unlock()
	if idx != nil {
		return idx, nil
	}
	files, err := s.refresh(ctx)
	if err != nil {
		return nil, err
	}
	if idx = files[name]; idx == nil {
		return nil, fmt.Errorf("segment object %q is gone", name)
	}
	return idx, nil
}

// typeFromName reads "Observation" from "Observation.ndjson",
// "x/Observation.003.ndjson" or "Observation/part-1.ndjson".
func typeFromName(name string) string {
	parts := strings.Split(name, "/")
	if m := typeInName.FindStringSubmatch(parts[len(parts)-1]); m != nil && fhir.IsResourceType(m[1]) {
		return m[1]
	}
	if len(parts) > 1 && fhir.IsResourceType(parts[len(parts)-2]) {
		return parts[len(parts)-2]
	}
	return ""
}

// index records, per type, the line count and byte span of an object.
func (s *Source) index(ctx context.Context, o Object) (*fileIndex, error) {
	idx := &fileIndex{version: o.Version, size: o.Size, types: map[string]*span{}}
	if s.typesByName {
		if t := typeFromName(o.Name); t != "" {
			idx.types[t] = &span{count: -1, start: 0, end: o.Size}
			idx.primary = t
			return idx, nil
		}
	}
	rc, err := s.objs.Open(ctx, o.Name, o.Version, 0, o.Size)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	lr := newLineReader(rc, 0)
	defer lr.release()
	for {
		start := lr.pos
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			return nil, err
		}
		if len(line) == 0 {
			continue
		}
		t := gjson.GetBytes(line, "resourceType")
		if t.Type != gjson.String || t.Str == "" {
			continue
		}
		sp := idx.types[t.Str]
		if sp == nil {
			sp = &span{start: start}
			idx.types[t.Str] = sp
		}
		sp.count++
		sp.end = lr.pos
	}
	// The type whose lines start first reports the file's bad lines; its
	// span covers the whole file so every bad line lies in one of its
	// segments, and only there.
	for t, sp := range idx.types {
		if idx.primary == "" || sp.start < idx.types[idx.primary].start {
			idx.primary = t
		}
	}
	if sp := idx.types[idx.primary]; sp != nil {
		sp.start, sp.end = 0, lr.pos
	}
	return idx, nil
}

// Types implements export.Source.
func (s *Source) Types(ctx context.Context) ([]string, error) {
	files, err := s.refresh(ctx)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	for _, idx := range files {
		for t := range idx.types {
			if fhir.IsResourceType(t) {
				set[t] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out, nil
}

// Counts returns the number of resources of each type (-1 for a type any
// of whose objects was typed by name and not counted).
func (s *Source) Counts(ctx context.Context) (map[string]int64, error) {
	files, err := s.refresh(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, idx := range files {
		for t, sp := range idx.types {
			if sp.count < 0 || out[t] < 0 {
				out[t] = -1
				continue
			}
			out[t] += sp.count
		}
	}
	return out, nil
}

// segment is a byte range [start, end) of one file, pinned to the version
// of the file it was planned on: "start:end:v=<base64url version>:file"
// ("start:end:file" from before pinning reads unpinned).
type segment struct {
	file       string
	version    string
	start, end int64
}

func (sg segment) String() string {
	if sg.version == "" {
		return fmt.Sprintf("%d:%d:%s", sg.start, sg.end, sg.file)
	}
	return fmt.Sprintf("%d:%d:v=%s:%s", sg.start, sg.end, base64.RawURLEncoding.EncodeToString([]byte(sg.version)), sg.file)
}

func parseSegment(s string) (segment, error) {
	a, rest, ok1 := strings.Cut(s, ":")
	b, file, ok2 := strings.Cut(rest, ":")
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	var version string
	if v, f, ok := strings.Cut(file, ":"); ok && strings.HasPrefix(v, "v=") {
		raw, err := base64.RawURLEncoding.DecodeString(v[2:])
		if err != nil {
			return segment{}, fmt.Errorf("invalid segment %q", s)
		}
		version, file = string(raw), f
	}
	if !ok1 || !ok2 || err1 != nil || err2 != nil || start < 0 || end < start || file == "" {
		return segment{}, fmt.Errorf("invalid segment %q", s)
	}
	return segment{file: file, version: version, start: start, end: end}, nil
}

// Plan implements export.Source: one segment per file holding the type,
// split into line-aligned ranges of about segmentBytes.
func (s *Source) Plan(ctx context.Context, q export.Query, typ string) ([]string, error) {
	files, err := s.refresh(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(files))
	for rel, idx := range files {
		if idx.types[typ] != nil {
			names = append(names, rel)
		}
	}
	sort.Strings(names)
	patients, indexed := s.indexedPatients(q)
	var out []string
	for _, rel := range names {
		idx := files[rel]
		sp := idx.types[typ]
		if indexed {
			segs, use, err := s.planIndexed(ctx, rel, idx, typ, patients)
			if err != nil {
				return nil, err
			}
			if use {
				out = append(out, segs...)
				continue
			}
		}
		bounds, err := s.split(ctx, rel, idx.version, sp.start, sp.end)
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(bounds); i++ {
			out = append(out, segment{file: rel, version: idx.version, start: bounds[i], end: bounds[i+1]}.String())
		}
	}
	return out, nil
}

// split returns line-aligned boundaries start = b0 < b1 < … < bn = end.
func (s *Source) split(ctx context.Context, name, version string, start, end int64) ([]int64, error) {
	bounds := []int64{start}
	for next := start + s.segmentBytes; next < end; next += s.segmentBytes {
		if next <= bounds[len(bounds)-1] {
			continue
		}
		// The boundary is the start of the first line at or after next.
		b, err := s.lineStartAfter(ctx, name, version, next-1, end)
		if err != nil {
			return nil, err
		}
		if b >= end {
			break
		}
		if b > bounds[len(bounds)-1] {
			bounds = append(bounds, b)
		}
	}
	return append(bounds, end), nil
}

// lineStartAfter returns the offset just after the first '\n' at or after
// pos (limit if there is none before it).
func (s *Source) lineStartAfter(ctx context.Context, name, version string, pos, limit int64) (int64, error) {
	rc, err := s.objs.Open(ctx, name, version, pos, limit)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	buf := make([]byte, 64<<10)
	for pos < limit {
		n, err := rc.Read(buf)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return pos + int64(i) + 1, nil
		}
		pos += int64(n)
		if err == io.EOF {
			return limit, nil
		}
		if err != nil {
			return 0, err
		}
	}
	return limit, nil
}
