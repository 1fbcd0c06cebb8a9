package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// touch rewrites the resources of one type in a source folder: those whose
// id pick selects get a new meta.lastUpdated (now) and active flipped; the
// file is replaced atomically. It returns the changed resources by key.
func touch(t *testing.T, dir, typ string, pick func(id string) bool) map[string][]byte {
	t.Helper()
	path := filepath.Join(dir, typ+".ndjson")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	changed := map[string][]byte{}
	var out bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	now := fhir.FormatInstant(time.Now())
	for sc.Scan() {
		line := sc.Bytes()
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		if id, _ := r["id"].(string); pick(id) {
			meta, _ := r["meta"].(map[string]any)
			if meta == nil {
				meta = map[string]any{}
			}
			meta["lastUpdated"] = now
			r["meta"] = meta
			active, _ := r["active"].(bool)
			r["active"] = !active
			line, _ = json.Marshal(r)
			changed[typ+"/"+id] = line
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return changed
}

// TestSinceFileIncremental runs three incremental exports with changes
// between them: the first exports everything, each later one exactly the
// resources changed since the one before (no overlap, nothing missed), and
// the file holds the last complete export's transactionTime.
func TestSinceFileIncremental(t *testing.T) {
	data := t.TempDir()
	if out, err := execGenerate(data, 12); err != nil {
		t.Fatalf("generate: %v\n%s", err, out)
	}
	s := startServer(t, data)
	sinceFile := filepath.Join(t.TempDir(), "last-export")
	export := func(round int) map[string][]byte {
		t.Helper()
		out := filepath.Join(t.TempDir(), fmt.Sprint(round))
		stdout := mustExport(t, "--server", s.base, "--since-file", sinceFile, "--out", out, "--output", "json")
		var sum struct{ TransactionTime string }
		if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(sinceFile)
		if err != nil || strings.TrimSpace(string(b)) != sum.TransactionTime {
			t.Fatalf("round %d: since file holds %q (%v), want the transactionTime %q", round, b, err, sum.TransactionTime)
		}
		return sourceResources(t, out)
	}

	first := export(1)
	sameSet(t, first, sourceResources(t, data))

	// Round 2: some patients and observations change.
	want2 := touch(t, data, "Patient", func(id string) bool { return strings.HasSuffix(id, "1") || strings.HasSuffix(id, "3") })
	n := 0
	for k, v := range touch(t, data, "Observation", func(string) bool { n++; return n%50 == 0 }) {
		want2[k] = v
	}
	if len(want2) < 2 {
		t.Fatalf("the test changed only %d resources", len(want2))
	}
	got2 := export(2)
	sameSet(t, got2, want2)

	// Round 3: other patients, and one changed in round 2 changes again.
	want3 := touch(t, data, "Patient", func(id string) bool { return strings.HasSuffix(id, "2") || strings.HasSuffix(id, "3") })
	got3 := export(3)
	sameSet(t, got3, want3)

	// The union, latest version first, is the source as it is now.
	union := map[string][]byte{}
	for _, round := range []map[string][]byte{first, got2, got3} {
		for k, v := range round {
			union[k] = v
		}
	}
	sameSet(t, union, sourceResources(t, data))

	// An export that fails leaves the file alone.
	before, _ := os.ReadFile(sinceFile)
	if _, _, code := runCLI(t, "export", "--server", s.base, "--since-file", sinceFile, "--type", "NotAType", "--out", t.TempDir()); code != 1 {
		t.Errorf("bad export: status %d, want 1", code)
	}
	if after, _ := os.ReadFile(sinceFile); !bytes.Equal(before, after) {
		t.Errorf("a failed export changed the since file from %q to %q", before, after)
	}
}
