// Package ndjsonsource is the Source over a directory of NDJSON files: every
// *.ndjson file below the directory, one resource per line, any mix of types
// per file. An index (types, line counts and byte spans per file) is built
// on first use and refreshed when a file's size or modification time
// changes. Large files are planned as byte-range segments aligned to line
// starts, so one type fans out into parallel units; a cursor is the byte
// offset of the next line.
//
// Filters: resourceType, meta.lastUpdated after _since and not after the
// upper bound (resources without lastUpdated are always included), and at
// patient and group level membership in the Patient compartment of the
// selected patients. _typeFilter is not supported.
package ndjsonsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// DefaultSegmentBytes is the size of the byte ranges a large file is split into.
const DefaultSegmentBytes = 32 << 20

// maxLine bounds one resource line (a larger line is reported as a bad record).
const maxLine = 256 << 20

// Source reads resources from a directory of NDJSON files.
type Source struct {
	dir          string
	segmentBytes int64

	mu    sync.Mutex
	files map[string]*fileIndex // by slash path relative to dir
}

var _ export.Source = (*Source)(nil)

type fileIndex struct {
	size  int64
	mtime time.Time
	types map[string]*span
	// primary is the type whose units report the file's bad lines, so each
	// bad line is reported once (see indexFile).
	primary string
}

type span struct {
	count      int64
	start, end int64 // from the first line of the type to the end of its last
}

// New returns a source over dir. segmentBytes ≤ 0 takes the default.
func New(dir string, segmentBytes int64) (*Source, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("ndjson source: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("ndjson source: %s is not a directory", dir)
	}
	if segmentBytes <= 0 {
		segmentBytes = DefaultSegmentBytes
	}
	return &Source{dir: dir, segmentBytes: segmentBytes, files: map[string]*fileIndex{}}, nil
}

// Caps implements export.Source.
func (s *Source) Caps() export.SourceCaps { return export.SourceCaps{} }

// refresh brings the index up to date and returns a snapshot of it.
func (s *Source) refresh() (map[string]*fileIndex, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	err := filepath.WalkDir(s.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".ndjson") {
			return nil
		}
		rel, err := filepath.Rel(s.dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		seen[rel] = true
		if old := s.files[rel]; old != nil && old.size == info.Size() && old.mtime.Equal(info.ModTime()) {
			return nil
		}
		idx, err := indexFile(path)
		if err != nil {
			return err
		}
		idx.size, idx.mtime = info.Size(), info.ModTime()
		s.files[rel] = idx
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", s.dir, err)
	}
	snap := make(map[string]*fileIndex, len(seen))
	for rel := range s.files {
		if !seen[rel] {
			delete(s.files, rel)
			continue
		}
		snap[rel] = s.files[rel]
	}
	return snap, nil
}

// indexFile records, per type, the line count and byte span of a file.
func indexFile(path string) (*fileIndex, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	idx := &fileIndex{types: map[string]*span{}}
	lr := newLineReader(f, 0)
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
func (s *Source) Types(_ context.Context) ([]string, error) {
	files, err := s.refresh()
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

// Counts returns the number of resources of each type in the directory.
func (s *Source) Counts(_ context.Context) (map[string]int64, error) {
	files, err := s.refresh()
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for _, idx := range files {
		for t, sp := range idx.types {
			out[t] += sp.count
		}
	}
	return out, nil
}

// segment is a byte range [start, end) of one file.
type segment struct {
	file       string
	start, end int64
}

func (sg segment) String() string { return fmt.Sprintf("%d:%d:%s", sg.start, sg.end, sg.file) }

func parseSegment(s string) (segment, error) {
	a, rest, ok1 := strings.Cut(s, ":")
	b, file, ok2 := strings.Cut(rest, ":")
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil || start < 0 || end < start || file == "" {
		return segment{}, fmt.Errorf("invalid segment %q", s)
	}
	return segment{file: file, start: start, end: end}, nil
}

// Plan implements export.Source: one segment per file holding the type,
// split into line-aligned ranges of about segmentBytes.
func (s *Source) Plan(_ context.Context, _ export.Query, typ string) ([]string, error) {
	files, err := s.refresh()
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
	var out []string
	for _, rel := range names {
		sp := files[rel].types[typ]
		bounds, err := s.split(rel, sp.start, sp.end)
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(bounds); i++ {
			out = append(out, segment{file: rel, start: bounds[i], end: bounds[i+1]}.String())
		}
	}
	return out, nil
}

// split returns line-aligned boundaries start = b0 < b1 < … < bn = end.
func (s *Source) split(rel string, start, end int64) ([]int64, error) {
	bounds := []int64{start}
	if end-start <= s.segmentBytes {
		return append(bounds, end), nil
	}
	f, err := os.Open(filepath.Join(s.dir, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for next := start + s.segmentBytes; next < end; next += s.segmentBytes {
		if next <= bounds[len(bounds)-1] {
			continue
		}
		// The boundary is the start of the first line at or after next.
		b, err := lineStartAfter(f, next-1, end, buf)
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

// lineStartAfter returns the offset just after the first '\n' at or after pos.
func lineStartAfter(f *os.File, pos, limit int64, buf []byte) (int64, error) {
	for pos < limit {
		n, err := f.ReadAt(buf, pos)
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
