package ndjsonsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

func write(t *testing.T, dir, name string, lines ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func obs(i int, patient, updated string) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":"o%d","meta":{"lastUpdated":%q},"subject":{"reference":"Patient/%s"}}`, i, updated, patient)
}

// readAll reads every segment of a type, resuming from the cursor after
// each resource (as a chunk stopped by its budget would), and returns ids.
func readAll(t *testing.T, s *Source, q export.Query, typ string) (ids []string, bad int) {
	t.Helper()
	ctx := context.Background()
	segs, err := s.Plan(ctx, q, typ)
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		cursor := ""
		for {
			r, err := s.Open(ctx, q, typ, seg, cursor)
			if err != nil {
				t.Fatal(err)
			}
			line, err := r.Next()
			var br *export.BadRecordError
			if errors.As(err, &br) {
				bad++
				cursor = r.Cursor()
				r.Close()
				continue
			}
			if err == io.EOF {
				r.Close()
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var id string
			fmt.Sscanf(strings.SplitN(string(line), `"id":"`, 2)[1], "%s", &id)
			ids = append(ids, strings.SplitN(id, `"`, 2)[0])
			cursor = r.Cursor()
			r.Close()
		}
	}
	return ids, bad
}

func TestSource(t *testing.T) {
	dir := t.TempDir()
	var many []string
	for i := 0; i < 200; i++ {
		many = append(many, obs(i, fmt.Sprintf("p%d", i%4), fmt.Sprintf("2025-01-%02dT00:00:00Z", 1+i%28)))
	}
	write(t, dir, "Observation.ndjson", many...)
	write(t, dir, "sub/mixed.ndjson",
		`{"resourceType":"Patient","id":"p0","meta":{"lastUpdated":"2025-01-01T00:00:00Z"}}`,
		`not json at all`,
		`{"resourceType":"Patient","id":"p1"}`,
		"",
		`{"resourceType":"Group","id":"g","member":[{"entity":{"reference":"Patient/p0"}},{"entity":{"reference":"Patient/p1"},"inactive":true}]}`,
		`{"resourceType":"Patient","id":"p2","meta":{"lastUpdated":"2025-06-01T00:00:00Z"}}`)
	write(t, dir, "ignored.json", `{"resourceType":"Patient","id":"nope"}`)
	s, err := New(dir, 1000) // small segments: Observation splits
	if err != nil {
		t.Fatal(err)
	}
	types, _ := s.Types(context.Background())
	if strings.Join(types, ",") != "Group,Observation,Patient" {
		t.Errorf("types = %v", types)
	}
	segs, _ := s.Plan(context.Background(), export.Query{}, "Observation")
	if len(segs) < 10 {
		t.Errorf("Observation planned as %d segments, want it split", len(segs))
	}
	since := time.Date(2025, 1, 20, 0, 0, 0, 0, time.UTC)
	until := time.Date(2025, 1, 25, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		q       export.Query
		typ     string
		want    int
		wantBad int
		check   func(ids []string) bool
	}{
		{"all observations once across segments", export.Query{Level: bulkdata.LevelSystem}, "Observation", 200, 0, func(ids []string) bool {
			seen := map[string]bool{}
			for _, id := range ids {
				if seen[id] {
					return false
				}
				seen[id] = true
			}
			return true
		}},
		{"since strictly after, until inclusive", export.Query{Level: bulkdata.LevelSystem, Since: &since, Until: &until}, "Observation", 5 * 7, 0, nil},
		{"patients of a mixed file, bad line reported once", export.Query{Level: bulkdata.LevelSystem}, "Patient", 3, 1, nil},
		{"bad lines are not reported by other types", export.Query{Level: bulkdata.LevelSystem}, "Group", 1, 0, nil},
		{"no lastUpdated is always included", export.Query{Level: bulkdata.LevelSystem, Since: &since}, "Patient", 2, 1, func(ids []string) bool { return strings.Join(ids, ",") == "p1,p2" }},
		{"patient level selected", export.Query{Level: bulkdata.LevelPatient, Patients: []string{"p1"}}, "Observation", 50, 0, nil},
		{"group active members only", export.Query{Level: bulkdata.LevelGroup, GroupID: "g"}, "Patient", 1, 1, func(ids []string) bool { return len(ids) == 1 && ids[0] == "p0" }},
		{"group compartment", export.Query{Level: bulkdata.LevelGroup, GroupID: "g"}, "Observation", 50, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, bad := readAll(t, s, tc.q, tc.typ)
			if len(ids) != tc.want || bad != tc.wantBad {
				t.Errorf("got %d resources and %d bad records, want %d and %d (%v)", len(ids), bad, tc.want, tc.wantBad, ids)
			}
			if tc.check != nil && !tc.check(ids) {
				t.Errorf("ids = %v", ids)
			}
		})
	}
	// The index follows changes to the directory.
	write(t, dir, "Condition.ndjson", `{"resourceType":"Condition","id":"c","subject":{"reference":"Patient/p0"}}`)
	if types, _ := s.Types(context.Background()); strings.Join(types, ",") != "Condition,Group,Observation,Patient" {
		t.Errorf("types after adding a file = %v", types)
	}
	if m, _ := s.MissingPatients(context.Background(), []string{"p0", "zz"}); strings.Join(m, ",") != "zz" {
		t.Errorf("missing = %v", m)
	}
	if _, err := s.GroupMembers(context.Background(), "nope"); !errors.Is(err, export.ErrGroupNotFound) {
		t.Errorf("unknown group = %v", err)
	}
	if _, err := s.Open(context.Background(), export.Query{}, "Patient", "0:10:../etc/passwd", ""); err == nil {
		t.Error("opened a segment outside the directory")
	}
}

// TestChangedFileIsDetected: a segment planned on one version of a file is
// not read from another (size or modification time changed).
func TestChangedFileIsDetected(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "Observation.ndjson", obs(1, "p", "2020-01-01T00:00:00Z"), obs(2, "p", "2020-01-01T00:00:00Z"))
	s, err := New(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	q := export.Query{Level: bulkdata.LevelSystem}
	segs, err := s.Plan(ctx, q, "Observation")
	if err != nil || len(segs) != 1 {
		t.Fatalf("plan = %v, %v", segs, err)
	}
	r, err := s.Open(ctx, q, "Observation", segs[0], "")
	if err != nil {
		t.Fatalf("open unchanged: %v", err)
	}
	r.Close()
	for _, change := range []struct {
		name string
		do   func()
	}{
		{"appended", func() {
			write(t, dir, "Observation.ndjson", obs(1, "p", "2020-01-01T00:00:00Z"), obs(2, "p", "2020-01-01T00:00:00Z"), obs(3, "p", "2020-01-01T00:00:00Z"))
		}},
		{"same size, touched", func() {
			write(t, dir, "Observation.ndjson", obs(1, "p", "2020-01-01T00:00:00Z"), obs(2, "p", "2020-01-01T00:00:00Z"))
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(filepath.Join(dir, "Observation.ndjson"), later, later); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(change.name, func(t *testing.T) {
			change.do()
			_, err := s.Open(ctx, q, "Observation", segs[0], "")
			var changed *export.SourceChangedError
			if !errors.As(err, &changed) || changed.Object != "Observation.ndjson" {
				t.Fatalf("open after the file changed = %v, want a SourceChangedError naming Observation.ndjson", err)
			}
		})
	}
	// Segments from before pinning ("start:end:file") still read.
	sg, _ := parseSegment(segs[0])
	sg.version = ""
	if _, err := s.Open(ctx, q, "Observation", sg.String(), ""); err != nil {
		t.Errorf("unpinned segment: %v", err)
	}
}
