package ndjsonsource

import (
	"bufio"
	"bytes"
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// The patient index of an object records, for every patient, the byte
// ranges of the object that hold resources in the patient's compartment, so
// a Patient or Group export reads only those ranges. It is built once per
// object version (at Plan, by the first patient-level export that meets the
// object) and kept in an IndexStore beside the source's state: a directory
// of the embedded server, a prefix of the export bucket on AWS. A changed
// object (another mtime+size or ETag) has another key, so a stale index is
// never used; it is rebuilt.
//
// The index only narrows what is read: every line read still passes the
// compartment check of the patients asked for, so a wrong index can make an
// export read more than it needs, never export more than asked.
//
// Layout, per object: a body of sorted records "patient\tstart\tend\n"
// (runs of consecutive lines; unreadable lines under the empty patient, so
// the unit that reports bad lines still meets them), and a small fence
// object (JSON) with the first patient and offset of every block of about
// indexBlockBytes of the body. A lookup reads the fence and then only the
// blocks that can hold the batch's patients: memory and reads grow with the
// batch, not with the number of patients in the source.

// IndexStore keeps patient indexes.
type IndexStore interface {
	// Put stores the content of r at key, replacing what is there.
	Put(ctx context.Context, key string, r io.Reader) error
	// Get reads the byte range [start, end) of key (end < 0: to its end);
	// an error wrapping fs.ErrNotExist if there is no object at key.
	Get(ctx context.Context, key string, start, end int64) (io.ReadCloser, error)
}

const (
	// indexBlockBytes is the size of the blocks of an index body a lookup
	// reads.
	indexBlockBytes = 64 << 10
	// indexSortRecords is how many records index building sorts in memory
	// before it spills a sorted run to a temporary file.
	indexSortRecords = 200_000
	// rangeGap: ranges closer than this are read as one (one request, a
	// few bytes more).
	rangeGap = 64 << 10
	// indexFormat names the layout; another layout has other keys.
	indexFormat = "pidx1"
)

// byteRange is [start, end) of an object.
type byteRange struct{ start, end int64 }

// indexRecord is one run of lines of a patient.
type indexRecord struct {
	patient    string
	start, end int64
}

// fence is what a lookup reads first.
type fence struct {
	Format  string       `json:"format"`
	Object  string       `json:"object"`
	Version string       `json:"version"`
	Body    int64        `json:"bodyBytes"`
	Blocks  []fenceBlock `json:"blocks"`
}

type fenceBlock struct {
	First  string `json:"first"`
	Offset int64  `json:"offset"`
}

// indexKeys are the keys of an object version's index body and fence.
func indexKeys(name, version string) (body, fenceKey string) {
	h := sha256.Sum256([]byte(indexFormat + "\x00" + name + "\x00" + version))
	base := hex.EncodeToString(h[:16])
	return base + ".idx", base + ".fence.json"
}

// indexable reports whether a patient id can be a key of the index: the
// record format separates fields by tabs and lines by newlines. An id the
// index cannot hold makes its batch read whole objects.
func indexable(id string) bool {
	return id != "" && !strings.ContainsAny(id, "\t\n\r")
}

// patientFence returns the fence of an object's index; when there is none
// for this version, it builds the index if build is set, else returns nil
// (a reader then reads its whole segment).
func (s *Source) patientFence(ctx context.Context, name string, idx *fileIndex, build bool) (*fence, error) {
	s.mu.Lock()
	f := s.fences[name]
	s.mu.Unlock()
	if f != nil && f.Version == idx.version {
		return f, nil
	}
	f, err := s.readFence(ctx, name, idx.version)
	if errors.Is(err, fs.ErrNotExist) {
		if !build {
			return nil, nil
		}
		f, err = s.buildIndex(ctx, name, idx)
	}
	if err != nil {
		return nil, fmt.Errorf("patient index of %s: %w", name, err)
	}
	s.mu.Lock()
	s.fences[name] = f
	s.mu.Unlock()
	return f, nil
}

func (s *Source) readFence(ctx context.Context, name, version string) (*fence, error) {
	_, fk := indexKeys(name, version)
	rc, err := s.pidx.Get(ctx, fk, 0, -1)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var f fence
	if err := json.NewDecoder(io.LimitReader(rc, 64<<20)).Decode(&f); err != nil {
		return nil, fmt.Errorf("read fence: %w", err)
	}
	if f.Format != indexFormat || f.Object != name || f.Version != version {
		// A fence of another object under a colliding key: treat as absent.
		return nil, fs.ErrNotExist
	}
	return &f, nil
}

// buildIndex scans an object once and stores its patient index. Runs are
// sorted in memory up to indexSortRecords and spilled to temporary files
// beyond that, then merged, so memory stays bounded at any number of
// patients.
func (s *Source) buildIndex(ctx context.Context, name string, idx *fileIndex) (*fence, error) {
	rc, err := s.objs.Open(ctx, name, idx.version, 0, idx.size)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	srt := &recordSorter{}
	defer srt.cleanup()
	lr := newLineReader(rc, 0)
	defer lr.release()
	open := map[string]*indexRecord{} // the runs the previous line extended
	next := map[string]*indexRecord{}
	var badRun *indexRecord
	flush := func(r *indexRecord) error { return srt.add(*r) }
	for {
		start := lr.pos
		line, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, errLineTooLong) {
			return nil, err
		}
		if len(line) == 0 && err == nil {
			continue // a blank line extends nothing and breaks nothing
		}
		var h fhir.Head
		ok := err == nil
		if ok {
			h, ok = fhir.Peek(line)
		}
		if !ok {
			if badRun != nil && badRun.end == start {
				badRun.end = lr.pos
			} else {
				if badRun != nil {
					if err := flush(badRun); err != nil {
						return nil, err
					}
				}
				badRun = &indexRecord{start: start, end: lr.pos}
			}
			continue
		}
		fhir.CompartmentPatients(h.ResourceType, line, func(id string) bool {
			if !indexable(id) || next[id] != nil {
				return true
			}
			if r := open[id]; r != nil {
				r.end = lr.pos
				next[id] = r
				delete(open, id)
			} else {
				next[id] = &indexRecord{patient: id, start: start, end: lr.pos}
			}
			return true
		})
		for _, r := range open { // runs this line did not extend end
			if err := flush(r); err != nil {
				return nil, err
			}
		}
		clear(open)
		open, next = next, open
	}
	for _, r := range open {
		if err := flush(r); err != nil {
			return nil, err
		}
	}
	if badRun != nil {
		if err := flush(badRun); err != nil {
			return nil, err
		}
	}
	return s.writeIndex(ctx, name, idx.version, srt)
}

// writeIndex writes the sorted records as the index body and its fence.
func (s *Source) writeIndex(ctx context.Context, name, version string, srt *recordSorter) (*fence, error) {
	tmp, err := os.CreateTemp("", "bulkfhir-pidx-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, 256<<10)
	f := &fence{Format: indexFormat, Object: name, Version: version}
	var off, blockStart int64 = 0, -1
	var last *indexRecord
	emit := func(r indexRecord) error {
		if off-blockStart >= indexBlockBytes || blockStart < 0 {
			blockStart = off
			f.Blocks = append(f.Blocks, fenceBlock{First: r.patient, Offset: off})
		}
		n, err := fmt.Fprintf(bw, "%s\t%d\t%d\n", r.patient, r.start, r.end)
		off += int64(n)
		return err
	}
	err = srt.each(func(r indexRecord) error {
		// Runs of one patient that touch merge.
		if last != nil && last.patient == r.patient && r.start <= last.end {
			last.end = max(last.end, r.end)
			return nil
		}
		if last != nil {
			if err := emit(*last); err != nil {
				return err
			}
		}
		last = &r
		return nil
	})
	if err == nil && last != nil {
		err = emit(*last)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("write index: %w", err)
	}
	f.Body = off
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	bodyKey, fenceKey := indexKeys(name, version)
	if err := s.pidx.Put(ctx, bodyKey, tmp); err != nil {
		return nil, fmt.Errorf("store index: %w", err)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	// The fence goes last: a fence that is there has its body.
	if err := s.pidx.Put(ctx, fenceKey, bytes.NewReader(b)); err != nil {
		return nil, fmt.Errorf("store index fence: %w", err)
	}
	return f, nil
}

// lookupRanges returns the sorted, merged byte ranges of object name
// within [lo, hi) that hold resources of the given patients (sorted,
// unique), and the unreadable lines when bad is set.
func (s *Source) lookupRanges(ctx context.Context, name string, f *fence, patients []string, bad bool, lo, hi int64) ([]byteRange, error) {
	if len(f.Blocks) == 0 {
		return nil, nil
	}
	want := make(map[string]bool, len(patients)+1)
	for _, p := range patients {
		want[p] = true
	}
	keys := patients
	if bad {
		want[""] = true
		keys = append([]string{""}, patients...)
	}
	// The blocks that can hold a key: block i covers [First_i, First_i+1].
	need := make([]bool, len(f.Blocks))
	for _, k := range keys {
		// Blocks before the first one starting at or after k end before
		// k, except the one just before it.
		i := sort.Search(len(f.Blocks), func(i int) bool { return f.Blocks[i].First >= k })
		if i > 0 {
			need[i-1] = true
		}
		for ; i < len(f.Blocks) && f.Blocks[i].First == k; i++ {
			need[i] = true
		}
	}
	bodyKey, _ := indexKeys(name, f.Version)
	var ranges []byteRange
	for i := 0; i < len(need); i++ {
		if !need[i] {
			continue
		}
		j := i
		for j+1 < len(need) && need[j+1] {
			j++
		}
		start, end := f.Blocks[i].Offset, f.Body
		if j+1 < len(f.Blocks) {
			end = f.Blocks[j+1].Offset
		}
		rs, err := s.readIndexRecords(ctx, bodyKey, start, end, want, lo, hi)
		if err != nil {
			return nil, err
		}
		ranges = append(ranges, rs...)
		i = j
	}
	return mergeRanges(ranges, rangeGap), nil
}

func (s *Source) readIndexRecords(ctx context.Context, key string, start, end int64, want map[string]bool, lo, hi int64) ([]byteRange, error) {
	rc, err := s.pidx.Get(ctx, key, start, end)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var out []byteRange
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p, rest, ok1 := strings.Cut(sc.Text(), "\t")
		a, b, ok2 := strings.Cut(rest, "\t")
		rs, err1 := strconv.ParseInt(a, 10, 64)
		re, err2 := strconv.ParseInt(b, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil || re < rs {
			return nil, fmt.Errorf("index %s: malformed record", key)
		}
		if !want[p] {
			continue
		}
		rs, re = max(rs, lo), min(re, hi)
		if rs < re {
			out = append(out, byteRange{rs, re})
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("index %s: %w", key, err)
	}
	return out, nil
}

// mergeRanges sorts ranges and merges those closer than gap.
func mergeRanges(rs []byteRange, gap int64) []byteRange {
	sort.Slice(rs, func(i, j int) bool { return rs[i].start < rs[j].start })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && r.start <= out[n-1].end+gap {
			out[n-1].end = max(out[n-1].end, r.end)
			continue
		}
		out = append(out, r)
	}
	return out
}

// recordSorter sorts index records by (patient, start) with bounded
// memory: sorted runs spill to temporary files, each merges at the end.
type recordSorter struct {
	buf    []indexRecord
	spills []*os.File
}

func (s *recordSorter) add(r indexRecord) error {
	s.buf = append(s.buf, r)
	if len(s.buf) >= indexSortRecords {
		return s.spill()
	}
	return nil
}

func lessRecord(a, b indexRecord) bool {
	if a.patient != b.patient {
		return a.patient < b.patient
	}
	return a.start < b.start
}

func (s *recordSorter) sortBuf() {
	sort.Slice(s.buf, func(i, j int) bool { return lessRecord(s.buf[i], s.buf[j]) })
}

func (s *recordSorter) spill() error {
	s.sortBuf()
	f, err := os.CreateTemp("", "bulkfhir-pidx-run-*")
	if err != nil {
		return err
	}
	s.spills = append(s.spills, f)
	bw := bufio.NewWriterSize(f, 256<<10)
	for _, r := range s.buf {
		fmt.Fprintf(bw, "%s\t%d\t%d\n", r.patient, r.start, r.end)
	}
	s.buf = s.buf[:0]
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// each calls fn with every record in order.
func (s *recordSorter) each(fn func(indexRecord) error) error {
	s.sortBuf()
	if len(s.spills) == 0 {
		for _, r := range s.buf {
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
	h := &runHeap{}
	for _, f := range s.spills {
		sc := bufio.NewScanner(bufio.NewReaderSize(f, 64<<10))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		c := &runCursor{sc: sc}
		if err := c.advance(); err != nil {
			return err
		}
		if c.ok {
			heap.Push(h, c)
		}
	}
	mem := &runCursor{mem: s.buf}
	if err := mem.advance(); err != nil {
		return err
	}
	if mem.ok {
		heap.Push(h, mem)
	}
	for h.Len() > 0 {
		c := (*h)[0]
		if err := fn(c.cur); err != nil {
			return err
		}
		if err := c.advance(); err != nil {
			return err
		}
		if c.ok {
			heap.Fix(h, 0)
		} else {
			heap.Pop(h)
		}
	}
	return nil
}

func (s *recordSorter) cleanup() {
	for _, f := range s.spills {
		f.Close()
		os.Remove(f.Name())
	}
}

// runCursor walks one sorted run: a spill file or the in-memory tail.
type runCursor struct {
	sc  *bufio.Scanner
	mem []indexRecord
	cur indexRecord
	ok  bool
}

func (c *runCursor) advance() error {
	if c.sc == nil {
		c.ok = len(c.mem) > 0
		if c.ok {
			c.cur, c.mem = c.mem[0], c.mem[1:]
		}
		return nil
	}
	if !c.sc.Scan() {
		c.ok = false
		return c.sc.Err()
	}
	p, rest, _ := strings.Cut(c.sc.Text(), "\t")
	a, b, _ := strings.Cut(rest, "\t")
	st, err1 := strconv.ParseInt(a, 10, 64)
	en, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("index run: malformed record")
	}
	c.cur, c.ok = indexRecord{patient: p, start: st, end: en}, true
	return nil
}

type runHeap []*runCursor

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return lessRecord(h[i].cur, h[j].cur) }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runCursor)) }
func (h *runHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}

// IndexDir is an IndexStore in a local directory (the embedded server's
// state directory).
type IndexDir string

var _ IndexStore = IndexDir("")

// Put implements IndexStore: written to a temporary file, then renamed.
func (d IndexDir) Put(_ context.Context, key string, r io.Reader) error {
	if !filepath.IsLocal(key) {
		return fmt.Errorf("index key %q is not local", key)
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(string(d), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(string(d), key))
}

// Get implements IndexStore.
func (d IndexDir) Get(_ context.Context, key string, start, end int64) (io.ReadCloser, error) {
	if !filepath.IsLocal(key) {
		return nil, fmt.Errorf("index key %q is not local", key)
	}
	f, err := os.Open(filepath.Join(string(d), key))
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	if end < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, end-start), f}, nil
}

// indexedPrefix marks a segment read through the patient index: only the
// ranges of the unit's patients within [start, end) are read.
const indexedPrefix = "px:"

// indexedPatients returns the sorted, unique patients of a query that the
// patient index can serve, and whether it can.
func (s *Source) indexedPatients(q export.Query) ([]string, bool) {
	if s.pidx == nil || q.Level == bulkdata.LevelSystem || len(q.Patients) == 0 {
		return nil, false
	}
	ps := slices.Clone(q.Patients)
	slices.Sort(ps)
	ps = slices.Compact(ps)
	for _, p := range ps {
		if !indexable(p) {
			return nil, false
		}
	}
	return ps, true
}

// planIndexed plans one type of one object for a batch of patients through
// the patient index: segments that cover only the batch's ranges, split at
// range boundaries into about segmentBytes of ranges each. use is false
// when the ranges cover half the type's span or more: the object is then
// read the ordinary way, in fewer and larger reads.
func (s *Source) planIndexed(ctx context.Context, name string, idx *fileIndex, typ string, patients []string) (segs []string, use bool, err error) {
	f, err := s.patientFence(ctx, name, idx, canBuildBefore(ctx, idx.size))
	if err != nil || f == nil {
		return nil, false, err // no index, and no time to build it: read the object whole
	}
	sp := idx.types[typ]
	ranges, err := s.lookupRanges(ctx, name, f, patients, idx.primary == typ, sp.start, sp.end)
	if err != nil {
		return nil, false, err
	}
	var total int64
	for _, r := range ranges {
		total += r.end - r.start
	}
	if 2*total >= sp.end-sp.start && len(ranges) > 0 {
		return nil, false, nil
	}
	for i := 0; i < len(ranges); {
		j, acc := i, int64(0)
		for j < len(ranges) && (j == i || acc < s.segmentBytes) {
			acc += ranges[j].end - ranges[j].start
			j++
		}
		sg := segment{file: name, version: idx.version, start: ranges[i].start, end: ranges[j-1].end}
		segs = append(segs, indexedPrefix+sg.String())
		i = j
	}
	return segs, true, nil
}

// indexBuildBytesPerSecond is how fast building an index is assumed to
// read an object (S3 from a Lambda, with the compartment walk of every
// line), on the slow side.
const indexBuildBytesPerSecond = 30 << 20

// canBuildBefore reports whether an index of an object of size bytes can
// be built before ctx's deadline (less a minute's margin): a Plan in a
// Lambda must not time out building indexes. An object it leaves is read
// whole by this export; the next Plan with more time builds its index.
func canBuildBefore(ctx context.Context, size int64) bool {
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	need := time.Duration(float64(size)/indexBuildBytesPerSecond*float64(time.Second)) + time.Minute
	return time.Until(dl) > need
}

// openRanges returns the ranges an indexed segment reads from pos on; nil
// and false when the index is not there any more (the segment is then read
// whole: the compartment check keeps the export to the batch's patients).
func (s *Source) openRanges(ctx context.Context, sg segment, idx *fileIndex, typ string, q export.Query, pos int64) ([]byteRange, bool, error) {
	patients, ok := s.indexedPatients(q)
	if !ok {
		return nil, false, nil
	}
	f, err := s.patientFence(ctx, sg.file, idx, false)
	if err != nil || f == nil {
		return nil, false, err
	}
	ranges, err := s.lookupRanges(ctx, sg.file, f, patients, idx.primary == typ, max(sg.start, pos), sg.end)
	if err != nil {
		return nil, false, err
	}
	return ranges, true, nil
}
