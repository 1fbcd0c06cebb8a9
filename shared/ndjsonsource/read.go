package ndjsonsource

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/typefilter"
)

var errLineTooLong = errors.New("line too long")

// lineReader reads lines and tracks the byte offset after each.
type lineReader struct {
	br   *bufio.Reader
	pos  int64
	long []byte
}

// lineBuffers holds the line readers' 1 MiB buffers between opens: every
// export chunk opens its segment, and fresh buffers were the largest part
// of what the engine allocated (and the garbage collector cleared).
var lineBuffers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 1<<20) }}

func newLineReader(r io.Reader, pos int64) *lineReader {
	l := &lineReader{}
	l.reset(r, pos)
	return l
}

// reset makes l read r from pos, keeping its buffer.
func (l *lineReader) reset(r io.Reader, pos int64) {
	if l.br == nil {
		l.br = lineBuffers.Get().(*bufio.Reader)
	}
	l.br.Reset(r)
	l.pos = pos
}

// release hands the buffer back; l keeps its position, and a read after
// release fails.
func (l *lineReader) release() {
	if l.br != nil {
		l.br.Reset(nil)
		lineBuffers.Put(l.br)
		l.br = nil
	}
}

// next returns the next line without its newline (and without a trailing
// '\r' or surrounding blanks). The slice is valid until the next call.
func (l *lineReader) next() ([]byte, error) {
	if l.br == nil {
		return nil, errors.New("read after close")
	}
	line, err := l.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		l.long = append(l.long[:0], line...)
		total := int64(len(line))
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = l.br.ReadSlice('\n')
			total += int64(len(line))
			if total <= maxLine {
				l.long = append(l.long, line...)
			}
		}
		l.pos += total
		if err != nil && err != io.EOF {
			return nil, err
		}
		if total > maxLine {
			return nil, errLineTooLong
		}
		line = l.long
	} else {
		l.pos += int64(len(line))
		if err == io.EOF && len(line) == 0 {
			return nil, io.EOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
	}
	return bytes.TrimSpace(line), nil
}

// Open implements export.Source.
func (s *Source) Open(ctx context.Context, q export.Query, typ, seg, cursor string) (export.Reader, error) {
	seg, indexed := strings.CutPrefix(seg, indexedPrefix)
	sg, err := parseSegment(seg)
	if err != nil {
		return nil, err
	}
	pos := sg.start
	if cursor != "" {
		c, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || c < sg.start || c > sg.end {
			return nil, fmt.Errorf("invalid cursor %q for segment %s", cursor, seg)
		}
		pos = c
	}
	idx, err := s.indexed(ctx, sg.file)
	if err != nil {
		return nil, err
	}
	r := &reader{typ: typ, end: sg.end, reportBad: idx.primary == typ, file: sg.file}
	r.setWindow(q.Since, q.Until)
	if r.filter, err = typefilter.Compile(typ, q.TypeFilters); err != nil {
		return nil, err
	}
	if q.Level != bulkdata.LevelSystem {
		r.compartment = true
		if q.Level == bulkdata.LevelGroup || len(q.Patients) > 0 {
			members, err := s.selectedPatients(ctx, q)
			if err != nil {
				return nil, err
			}
			r.patients = members
		}
	}
	r.ctx, r.objs, r.version = ctx, s.objs, sg.version
	r.ranges = []byteRange{{pos, sg.end}}
	if indexed {
		ranges, ok, err := s.openRanges(ctx, sg, idx, typ, q, pos)
		if err != nil {
			return nil, err
		}
		if ok {
			r.ranges = ranges
		}
	}
	if err := r.nextRange(pos); err != nil {
		return nil, err
	}
	return r, nil
}

// nextRange opens the next range to read (an empty one at pos when there
// is none left).
func (r *reader) nextRange(pos int64) error {
	if r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
	if len(r.ranges) == 0 {
		r.end = pos
		r.rc = io.NopCloser(strings.NewReader(""))
		if r.lr == nil {
			r.lr = newLineReader(r.rc, pos)
		}
		r.lr.pos = max(r.lr.pos, pos)
		return nil
	}
	next := r.ranges[0]
	r.ranges = r.ranges[1:]
	rc, err := r.objs.Open(r.ctx, r.file, r.version, next.start, next.end)
	if err != nil {
		return err
	}
	r.rc, r.end = rc, next.end
	if r.lr == nil {
		r.lr = newLineReader(rc, next.start)
	} else {
		r.lr.reset(rc, next.start)
	}
	return nil
}

// selectedPatients is the set of patients a Patient or Group query covers.
func (s *Source) selectedPatients(ctx context.Context, q export.Query) (map[string]bool, error) {
	set := map[string]bool{}
	if q.Level == bulkdata.LevelGroup {
		members, err := s.GroupMembers(ctx, q.GroupID)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			set[m] = true
		}
		if len(q.Patients) > 0 {
			only := map[string]bool{}
			for _, p := range q.Patients {
				if set[p] {
					only[p] = true
				}
			}
			set = only
		}
		return set, nil
	}
	for _, p := range q.Patients {
		set[p] = true
	}
	return set, nil
}

type reader struct {
	// ctx is the Open call's, for the ranged reads after the first (the
	// Reader interface has no context of its own).
	ctx     context.Context
	objs    Objects
	version string
	// ranges are the byte ranges still to read after the current one.
	ranges []byteRange
	rc     io.ReadCloser
	lr     *lineReader
	file   string
	typ    string
	end    int64
	since  *time.Time
	until  *time.Time
	// sinceDay and untilDay are the days a lastUpdated must be after and
	// before to be in the window whatever its zone (see setWindow).
	sinceDay, untilDay string
	compartment        bool
	patients           map[string]bool // nil: any patient
	filter             typefilter.Set  // _typeFilter queries of the type, OR-ed
	reportBad          bool
}

func (r *reader) Cursor() string { return strconv.FormatInt(r.lr.pos, 10) }

func (r *reader) Close() error {
	r.lr.release()
	return r.rc.Close()
}

func (r *reader) Next() ([]byte, error) {
	for {
		if r.lr.pos >= r.end {
			if len(r.ranges) == 0 {
				return nil, io.EOF
			}
			if err := r.nextRange(r.lr.pos); err != nil {
				return nil, err
			}
			continue
		}
		start := r.lr.pos
		line, err := r.lr.next()
		if err == io.EOF {
			return nil, io.EOF
		}
		if errors.Is(err, errLineTooLong) {
			if r.reportBad {
				return nil, &export.BadRecordError{Position: r.where(start), Reason: "line longer than 256 MiB"}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			continue
		}
		h, ok := fhir.Peek(line)
		if !ok {
			if r.reportBad {
				return nil, &export.BadRecordError{Position: r.where(start), Reason: "not a JSON object with a resourceType"}
			}
			continue
		}
		if h.ResourceType != r.typ || !r.inWindow(h.LastUpdated) || !r.inCompartment(line) || !r.filter.Match(line) {
			continue
		}
		return line, nil
	}
}

func (r *reader) where(offset int64) string { return fmt.Sprintf("%s byte %d", r.file, offset) }

// inWindow applies _since (strictly after) and the upper bound (at or
// before). A resource without a readable lastUpdated is always included.
func (r *reader) inWindow(lastUpdated string) bool {
	if r.since == nil && r.until == nil {
		return true
	}
	if day, ok := calendarDay(lastUpdated); ok &&
		(r.since == nil || day > r.sinceDay) && (r.until == nil || day < r.untilDay) {
		// More than a day from both bounds: no zone offset can move it
		// across one, so the date decides without parsing the instant.
		return true
	}
	t, ok := fhir.ParseLastUpdated(lastUpdated)
	if !ok {
		return true
	}
	if r.since != nil && !t.After(*r.since) {
		return false
	}
	if r.until != nil && t.After(*r.until) {
		return false
	}
	return true
}

// calendarDay is the "YYYY-MM-DD" that starts an instant, if it does.
func calendarDay(s string) (string, bool) {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' {
		return "", false
	}
	for _, i := range [...]int{0, 1, 2, 3, 5, 6, 8, 9} {
		if s[i] < '0' || s[i] > '9' {
			return "", false
		}
	}
	return s[:10], true
}

// setWindow sets the bounds and the days the date-only test compares with:
// the day after _since's and the day before the upper bound's (in UTC).
func (r *reader) setWindow(since, until *time.Time) {
	r.since, r.until = since, until
	if since != nil {
		r.sinceDay = since.UTC().AddDate(0, 0, 1).Format(time.DateOnly)
	}
	if until != nil {
		r.untilDay = until.UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	}
}

func (r *reader) inCompartment(line []byte) bool {
	if !r.compartment {
		return true
	}
	if r.patients != nil && r.typ != "Patient" && !mayReference(line, r.patients) {
		return false
	}
	in := false
	fhir.CompartmentPatients(r.typ, line, func(id string) bool {
		if r.patients == nil || r.patients[id] {
			in = true
			return false
		}
		return true
	})
	return in
}

var patientRef = []byte("Patient/")

// mayReference reports whether line may reference one of patients: false
// only when no "Patient/<id>" in its bytes names one of them and nothing in
// it is escaped. Every Patient reference fhir.PatientID reads an id from
// holds "Patient/<id>" literally in a line without escapes, ending the id
// at the closing quote or at "/_history/", so a false answer is certain
// and the full compartment check is only run on lines that can pass it
// (most lines of a Group export of a part of the patients cannot).
func mayReference(line []byte, patients map[string]bool) bool {
	if bytes.IndexByte(line, '\\') >= 0 {
		return true
	}
	for rest := line; ; {
		i := bytes.Index(rest, patientRef)
		if i < 0 {
			return false
		}
		rest = rest[i+len(patientRef):]
		end := bytes.IndexAny(rest, "\"/?#")
		if end < 0 {
			end = len(rest)
		}
		if patients[string(rest[:end])] {
			return true
		}
	}
}

// scanType calls fn for every resource of type t in the directory.
func (s *Source) scanType(ctx context.Context, t string, fn func(line []byte) bool) error {
	files, err := s.refresh(ctx)
	if err != nil {
		return err
	}
	for rel, idx := range files {
		sp := idx.types[t]
		if sp == nil {
			continue
		}
		rd, err := s.Open(ctx, export.Query{Level: bulkdata.LevelSystem}, t, segment{file: rel, start: sp.start, end: sp.end}.String(), "")
		if err != nil {
			return err
		}
		stopped := false
		if err := export.EachResource(rd, func(line []byte) bool {
			stopped = !fn(line)
			return !stopped
		}); err != nil || stopped {
			return err
		}
	}
	return nil
}

// GroupMembers implements export.Source: Patient members of the Group that
// are not marked inactive.
func (s *Source) GroupMembers(ctx context.Context, id string) ([]string, error) {
	if _, err := s.refresh(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	cached, ok := s.members[id]
	gen := s.gen
	s.mu.Unlock()
	if ok && cached.gen == gen {
		return cached.ids, nil
	}
	members, err := s.readMembers(ctx, id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.members[id] = groupMembers{gen: gen, ids: members}
	s.mu.Unlock()
	return members, nil
}

// readMembers reads the Group and its active Patient members.
func (s *Source) readMembers(ctx context.Context, id string) ([]string, error) {
	raw, err := s.ReadResource(ctx, "Group", id)
	if err != nil {
		return nil, err
	}
	return fhir.ActiveMembers(raw), nil
}

// ReadResource returns the resource t/id; export.ErrGroupNotFound for a
// missing Group, os.ErrNotExist for another missing type.
func (s *Source) ReadResource(ctx context.Context, t, id string) ([]byte, error) {
	var found []byte
	err := s.scanType(ctx, t, func(line []byte) bool {
		if gjson.GetBytes(line, "id").Str == id {
			found = append([]byte(nil), line...)
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		if t == "Group" {
			return nil, export.ErrGroupNotFound
		}
		return nil, os.ErrNotExist
	}
	return found, nil
}

// SearchGroups returns the Groups matching identifier ("value" or
// "system|value") and name (case-insensitive prefix), each when non-empty.
func (s *Source) SearchGroups(ctx context.Context, identifier, name string) ([][]byte, error) {
	var out [][]byte
	system, value, hasSystem := bytes.Cut([]byte(identifier), []byte("|"))
	if !hasSystem {
		value, system = system, nil
	}
	err := s.scanType(ctx, "Group", func(line []byte) bool {
		if identifier != "" {
			match := false
			gjson.GetBytes(line, "identifier").ForEach(func(_, id gjson.Result) bool {
				if id.Get("value").Str == string(value) && (!hasSystem || len(system) == 0 || id.Get("system").Str == string(system)) {
					match = true
					return false
				}
				return true
			})
			if !match {
				return true
			}
		}
		if name != "" && !bytes.HasPrefix(bytes.ToLower([]byte(gjson.GetBytes(line, "name").Str)), bytes.ToLower([]byte(name))) {
			return true
		}
		out = append(out, append([]byte(nil), line...))
		return true
	})
	return out, err
}

// MissingPatients implements export.Source.
func (s *Source) MissingPatients(ctx context.Context, ids []string) ([]string, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	err := s.scanType(ctx, "Patient", func(line []byte) bool {
		delete(want, gjson.GetBytes(line, "id").Str)
		return len(want) > 0
	})
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if want[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}
