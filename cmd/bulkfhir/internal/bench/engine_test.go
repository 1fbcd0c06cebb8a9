package bench

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// BenchmarkEngineExport is the unfiltered system export through the steps,
// NDJSON directory to directory file store: the engine's hot path.
func BenchmarkEngineExport(b *testing.B) {
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	if _, err := sampledata.Generate(data, sampledata.Options{Patients: 200, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	var size int64
	names, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	for _, n := range names {
		st, _ := os.Stat(n)
		size += st.Size()
	}
	jobs, files, err := localStores(filepath.Join(dir, "state"))
	if err != nil {
		b.Fatal(err)
	}
	defer jobs.Close()
	src, err := ndjsonsource.New(data, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		run, err := runExport(context.Background(), jobs, files, src, export.Config{}, bulkdata.LevelSystem, "", "")
		if err != nil {
			b.Fatal(err)
		}
		if run.Bytes != size {
			b.Fatalf("exported %d of %d bytes", run.Bytes, size)
		}
	}
}
