package sampledata

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

func TestGenerateIsDeterministicWithValidReferences(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	ca, err := Generate(a, Options{Patients: 12, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(b, Options{Patients: 12, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if len(ca) < 14 {
		t.Errorf("generated %d types, want at least 14", len(ca))
	}
	ids := map[string]bool{}
	var refs []string
	refRE := regexp.MustCompile(`"reference":"([A-Za-z]+/[^"]+)"`)
	files, _ := filepath.Glob(filepath.Join(a, "*.ndjson"))
	total := 0
	start, end := End.Add(-2*365*24*time.Hour), End
	for _, f := range files {
		ba, _ := os.ReadFile(f)
		bb, _ := os.ReadFile(filepath.Join(b, filepath.Base(f)))
		if !bytes.Equal(ba, bb) {
			t.Errorf("%s differs between two runs with the same seed", filepath.Base(f))
		}
		sc := bufio.NewScanner(bytes.NewReader(ba))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r struct {
				ResourceType string
				ID           string
				Meta         struct{ LastUpdated time.Time }
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: invalid JSON: %v", filepath.Base(f), err)
			}
			if r.Meta.LastUpdated.Before(start) || r.Meta.LastUpdated.After(end) {
				t.Errorf("%s/%s lastUpdated %v outside the two years", r.ResourceType, r.ID, r.Meta.LastUpdated)
			}
			ids[r.ResourceType+"/"+r.ID] = true
			for _, m := range refRE.FindAllSubmatch(sc.Bytes(), -1) {
				refs = append(refs, string(m[1]))
			}
			total++
		}
	}
	for _, r := range refs {
		if !ids[r] {
			t.Errorf("dangling reference %s", r)
		}
	}
	if per := total / 12; per < 100 || per > 300 {
		t.Errorf("%d resources per patient, want 100-300", per)
	}
	if ca["Group"] != len(GroupIDs) {
		t.Errorf("groups = %d", ca["Group"])
	}
}

func BenchmarkGenerate(b *testing.B) {
	dir := b.TempDir()
	for i := 0; i < b.N; i++ {
		counts, err := Generate(dir, Options{Patients: 100, Seed: uint64(i)})
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for _, c := range counts {
			n += c
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds()*float64(i+1)/float64(i+1), "resources/s")
	}
}
