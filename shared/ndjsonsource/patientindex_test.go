package ndjsonsource

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

func exportLines(t *testing.T, src *Source, q export.Query) []string {
	t.Helper()
	return exporttest.ReadAllTypes(t, src, q)
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		n += st.Size()
	}
	return n
}

// TestPatientIndexReadsOnlyTheBatch: a 5-patient batch read through the
// patient index exports exactly what a whole-file read does, and reads a
// small part of the source; without the index the same export reads all
// of it (the negative control of the measure).
func TestPatientIndexReadsOnlyTheBatch(t *testing.T) {
	data := t.TempDir()
	if _, err := sampledata.Generate(data, sampledata.Options{Patients: 200, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	total := dirBytes(t, data)
	ctx := context.Background()
	plain := NewFromObjects(Dir(data), Options{})
	indexed := NewFromObjects(Dir(data), Options{Index: IndexDir(t.TempDir())})
	members, err := plain.GroupMembers(ctx, "small-cohort")
	if err != nil || len(members) != 5 {
		t.Fatalf("small-cohort members = %v, %v", members, err)
	}
	q := export.Query{Level: bulkdata.LevelPatient, Patients: members}

	before := plain.BytesRead()
	want := exportLines(t, plain, q)
	if read := plain.BytesRead() - before; read < total {
		t.Errorf("the whole-file read read %d bytes of %d", read, total)
	}
	if len(want) < 5*10 {
		t.Fatalf("the batch has %d resources, too few to test with", len(want))
	}
	// The first export builds the index (one pass over the compartment
	// types), the second reads through it.
	if got := exportLines(t, indexed, q); !slices.Equal(got, want) {
		t.Fatalf("first indexed export: %d resources, whole-file read %d", len(got), len(want))
	}
	// The second export reads through the index; so does another process
	// (objects typed by their names, as on S3, so nothing is scanned to
	// list the types), which reads the index back from the store.
	before = indexed.BytesRead()
	if got := exportLines(t, indexed, q); !slices.Equal(got, want) {
		t.Fatalf("second indexed export: %d resources, whole-file read %d", len(got), len(want))
	}
	again := indexed.BytesRead() - before
	fresh := NewFromObjects(Dir(data), Options{Index: indexed.pidx, TypesByName: true})
	got := exportLines(t, fresh, q)
	if !slices.Equal(got, want) {
		t.Fatalf("indexed export in a new process: %d resources, whole-file read %d", len(got), len(want))
	}
	// Resources of patients outside the batch are never among them.
	for _, l := range got {
		if !strings.Contains(l, `"Patient/`) && !strings.Contains(l, `"resourceType":"Patient"`) {
			t.Errorf("a resource with no patient reference was exported: %.120s", l)
		}
	}
	read := fresh.BytesRead()
	for _, n := range []int64{again, read} {
		if n*100 >= total*5 {
			t.Errorf("an indexed export read %d of %d source bytes (%.1f %%), want under 5 %%", n, total, 100*float64(n)/float64(total))
		}
	}
	t.Logf("indexed 5-patient export read %d of %d source bytes (%.2f %%)", read, total, 100*float64(read)/float64(total))
}

// TestPatientIndexNeverWidensTheExport: an index that points a patient at
// another patient's lines makes the export read those lines, and export
// none of them: the compartment check runs on every line read.
func TestPatientIndexNeverWidensTheExport(t *testing.T) {
	data, idxDir := t.TempDir(), t.TempDir()
	var lines []string
	for i := 0; i < 30; i++ {
		lines = append(lines, obs(i, fmt.Sprintf("p%d", i/10), "2025-01-01T00:00:00Z"))
	}
	write(t, data, "Observation.ndjson", lines...)
	// p1's lines are 10..19.
	var p1start, p1end int64
	for i, l := range lines {
		if i == 10 {
			p1start = p1end
		}
		p1end += int64(len(l)) + 1
		if i == 19 {
			break
		}
	}
	st, err := os.Stat(filepath.Join(data, "Observation.ndjson"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	q := export.Query{Level: bulkdata.LevelPatient, Patients: []string{"p0"}}

	// The honest index first (the negative control): p0's ten lines.
	src := NewFromObjects(Dir(data), Options{Index: IndexDir(idxDir)})
	if ids, _ := readAll(t, src, q, "Observation"); len(ids) != 10 || ids[0] != "o0" {
		t.Fatalf("with the honest index: %v, want o0..o9", ids)
	}

	// Now a lying one: p0 lives where p1 does.
	bodyKey, fenceKey := indexKeys("Observation.ndjson", fileVersion(st))
	body := fmt.Sprintf("p0\t%d\t%d\n", p1start, p1end)
	f, _ := json.Marshal(fence{Format: indexFormat, Object: "Observation.ndjson", Version: fileVersion(st), Body: int64(len(body)),
		Blocks: []fenceBlock{{First: "p0", Offset: 0}}})
	if err := IndexDir(idxDir).Put(ctx, bodyKey, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	if err := IndexDir(idxDir).Put(ctx, fenceKey, bytes.NewReader(f)); err != nil {
		t.Fatal(err)
	}
	lying := NewFromObjects(Dir(data), Options{Index: IndexDir(idxDir)})
	segs, err := lying.Plan(ctx, q, "Observation")
	if err != nil || len(segs) != 1 || !strings.HasPrefix(segs[0], indexedPrefix) {
		t.Fatalf("plan through the lying index = %v, %v", segs, err)
	}
	ids, _ := readAll(t, lying, q, "Observation")
	if len(ids) != 0 {
		t.Errorf("the lying index exported %v, resources of p1", ids)
	}
	if lying.BytesRead() < p1end-p1start {
		t.Errorf("read %d bytes, want p1's %d: the lie was not followed, the test proves nothing", lying.BytesRead(), p1end-p1start)
	}
}

// TestPatientIndexFollowsSourceChanges: a changed object has a new index.
func TestPatientIndexFollowsSourceChanges(t *testing.T) {
	data := t.TempDir()
	var lines []string
	for i := 0; i < 40; i++ {
		lines = append(lines, obs(i, fmt.Sprintf("p%d", i/10), "2025-01-01T00:00:00Z"))
	}
	write(t, data, "Observation.ndjson", lines...)
	q := export.Query{Level: bulkdata.LevelPatient, Patients: []string{"p2"}}
	src := NewFromObjects(Dir(data), Options{Index: IndexDir(t.TempDir())})
	if ids, _ := readAll(t, src, q, "Observation"); len(ids) != 10 {
		t.Fatalf("before the change: %v", ids)
	}
	write(t, data, "Observation.ndjson", append(lines, obs(99, "p2", "2025-01-02T00:00:00Z"))...)
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(data, "Observation.ndjson"), later, later); err != nil {
		t.Fatal(err)
	}
	ids, _ := readAll(t, src, q, "Observation")
	if len(ids) != 11 || ids[10] != "o99" {
		t.Errorf("after the change: %v, want o20..o29 and o99", ids)
	}
}

// TestPatientIndexKeepsBadLines: an unreadable line inside the file is
// reported by the indexed read of its primary type, as by a whole-file read.
func TestPatientIndexKeepsBadLines(t *testing.T) {
	data := t.TempDir()
	var lines []string
	for i := 0; i < 40; i++ {
		if i == 25 {
			lines = append(lines, `{"resourceType":"Observation", broken`)
		}
		lines = append(lines, obs(i, fmt.Sprintf("p%d", i/10), "2025-01-01T00:00:00Z"))
	}
	write(t, data, "Observation.ndjson", lines...)
	q := export.Query{Level: bulkdata.LevelPatient, Patients: []string{"p0"}}
	wantIDs, wantBad := readAll(t, NewFromObjects(Dir(data), Options{}), q, "Observation")
	src := NewFromObjects(Dir(data), Options{Index: IndexDir(t.TempDir())})
	ids, bad := readAll(t, src, q, "Observation")
	if !slices.Equal(ids, wantIDs) || bad != wantBad || bad != 1 {
		t.Errorf("indexed: %v and %d bad, whole file: %v and %d bad", ids, bad, wantIDs, wantBad)
	}
}

// TestRecordSorterSpills: records sorted through spilled runs come out
// as an in-memory sort gives them.
func TestRecordSorterSpills(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var in []indexRecord
	s := &recordSorter{}
	defer s.cleanup()
	for i := 0; i < 3*indexSortRecords+17; i++ {
		r := indexRecord{patient: fmt.Sprintf("p%d", rng.Intn(5000)), start: rng.Int63n(1 << 40)}
		r.end = r.start + 10
		in = append(in, r)
		if err := s.add(r); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.spills) != 3 {
		t.Fatalf("%d spills, want 3", len(s.spills))
	}
	sort.Slice(in, func(i, j int) bool { return lessRecord(in[i], in[j]) })
	var out []indexRecord
	if err := s.each(func(r indexRecord) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(out, in) {
		t.Errorf("merged %d records, not in order (want %d)", len(out), len(in))
	}
}

func TestMergeRanges(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []byteRange
		gap  int64
		want []byteRange
	}{
		{"empty", nil, 10, []byteRange{}},
		{"apart", []byteRange{{50, 60}, {0, 10}}, 10, []byteRange{{0, 10}, {50, 60}}},
		{"within gap", []byteRange{{0, 10}, {15, 20}}, 10, []byteRange{{0, 20}}},
		{"overlap", []byteRange{{0, 30}, {10, 20}}, 0, []byteRange{{0, 30}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := mergeRanges(c.in, c.gap); !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// TestPatientIndexNotBuiltWithoutTime: a Plan whose deadline leaves no
// time to build an index (a Lambda near its timeout) plans the object the
// ordinary way and builds nothing; with time, it builds the index.
func TestPatientIndexNotBuiltWithoutTime(t *testing.T) {
	data, idxDir := t.TempDir(), t.TempDir()
	var lines []string
	for i := 0; i < 40; i++ {
		lines = append(lines, obs(i, fmt.Sprintf("p%d", i/10), "2025-01-01T00:00:00Z"))
	}
	write(t, data, "Observation.ndjson", lines...)
	q := export.Query{Level: bulkdata.LevelPatient, Patients: []string{"p1"}}
	src := NewFromObjects(Dir(data), Options{Index: IndexDir(idxDir)})
	short, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	segs, err := src.Plan(short, q, "Observation")
	if err != nil || len(segs) != 1 || strings.HasPrefix(segs[0], indexedPrefix) {
		t.Fatalf("plan with 30 s left = %v, %v; want one ordinary segment", segs, err)
	}
	if built, _ := filepath.Glob(filepath.Join(idxDir, "*.fence.json")); len(built) != 0 {
		t.Fatalf("an index was built with 30 s left: %v", built)
	}
	segs, err = src.Plan(context.Background(), q, "Observation")
	if err != nil || len(segs) != 1 || !strings.HasPrefix(segs[0], indexedPrefix) {
		t.Fatalf("plan without a deadline = %v, %v; want an indexed segment", segs, err)
	}
	if ids, _ := readAll(t, src, q, "Observation"); len(ids) != 10 || ids[0] != "o10" {
		t.Errorf("read %v, want o10..o19", ids)
	}
}
