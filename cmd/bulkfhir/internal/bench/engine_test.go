package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/gzfile"
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

// benchData generates a small dataset and opens fresh local stores in
// state; size is the source's bytes.
func benchData(t testing.TB, patients int) (data, state string, jobs export.JobStore, files *dirstore.Store, size int64) {
	t.Helper()
	dir := t.TempDir()
	data, state = filepath.Join(dir, "data"), filepath.Join(dir, "state")
	if _, err := sampledata.Generate(data, sampledata.Options{Patients: patients, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	bolt, files, err := localStores(state)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	names, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	for _, n := range names {
		st, _ := os.Stat(n)
		size += st.Size()
	}
	return data, state, bolt, files, size
}

// sameAsSource checks that every file under stored is a byte-for-byte copy
// of a source file in data (name: the source's name plus the key's suffix):
// not compressed, not cut short.
func sameAsSource(data, stored string) error {
	names, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	if len(names) == 0 {
		return fmt.Errorf("no source files in %s", data)
	}
	for _, name := range names {
		want, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		matches, _ := filepath.Glob(filepath.Join(stored, filepath.Base(name)+"*"))
		if len(matches) != 1 {
			return fmt.Errorf("%s: %d copies stored, want 1", filepath.Base(name), len(matches))
		}
		got, err := os.ReadFile(matches[0])
		if err != nil {
			return err
		}
		if gzfile.IsGzip(got) {
			return fmt.Errorf("%s: stored gzip-compressed", matches[0])
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("%s: %d bytes stored, not the source's %d", matches[0], len(got), len(want))
		}
	}
	return nil
}

// TestBaselineIsPlainCopy: the baseline's files on disk are the source's
// bytes, uncompressed, in every copy; the compressed reference's are not
// (the negative control: the check fails on a copy that went through
// compression, as the baseline once did).
func TestBaselineIsPlainCopy(t *testing.T) {
	ctx := context.Background()
	data, state, _, files, size := benchData(t, 20)
	base, err := baseline(ctx, data, 100, files, false, 2)
	if err != nil {
		t.Fatal(err)
	}
	if base.Bytes != 2*size || base.SourceMBPerSec != base.MBPerSec {
		t.Errorf("baseline copied %d bytes (source MB/s %v, MB/s %v), want %d", base.Bytes, base.SourceMBPerSec, base.MBPerSec, 2*size)
	}
	for i := 0; i < 2; i++ {
		if err := sameAsSource(data, filepath.Join(state, "files", baselinePlain, strconv.Itoa(i))); err != nil {
			t.Errorf("plain baseline, copy %d: %v", i, err)
		}
	}
	z, err := baseline(ctx, data, 100, files, true, 1)
	if err != nil {
		t.Fatal(err)
	}
	if z.Bytes != size {
		t.Errorf("compressed reference copied %d bytes, want %d", z.Bytes, size)
	}
	err = sameAsSource(data, filepath.Join(state, "files", baselineCompressed, "0"))
	if err == nil || !strings.Contains(err.Error(), "gzip-compressed") {
		t.Errorf("the check passed a compressed copy: %v", err)
	}
}

// TestEngineRatioIsSourceRate: an engine row's ratio is the source bytes
// it read per second over the baseline's MB/s, so an _elements export,
// which writes less than it reads, is measured by what it read.
func TestEngineRatioIsSourceRate(t *testing.T) {
	ctx := context.Background()
	data, _, jobs, files, _ := benchData(t, 20)
	src, err := ndjsonsource.New(data, 0)
	if err != nil {
		t.Fatal(err)
	}
	var c engineCase
	for _, e := range engineCases() {
		if strings.Contains(e.name, "_elements") {
			c = e
		}
	}
	base := Throughput{MBPerSec: 100}
	row, err := engineRun(ctx, jobs, files, src, c, 0, base)
	if err != nil {
		t.Fatal(err)
	}
	if row.SourceMBPerSec <= row.MBPerSec {
		t.Errorf("_elements: source %.2f MB/s, wrote %.2f MB/s; want more read than written", row.SourceMBPerSec, row.MBPerSec)
	}
	if want := row.SourceMBPerSec / base.MBPerSec; row.Ratio != want {
		t.Errorf("ratio = %v, want source MB/s over the baseline's, %v", row.Ratio, want)
	}
}

var casePatients = flag.Int("bench.patients", 200, "patients of BenchmarkEngineCases's dataset")

// BenchmarkEngineCases runs each of the bench's engine cases through the
// steps, for profiling (go test -bench EngineCases -cpuprofile): SetBytes is
// the source's size, so MB/s is source MB/s for the unfiltered case.
func BenchmarkEngineCases(b *testing.B) {
	ctx := context.Background()
	data, state, jobs, files, size := benchData(b, *casePatients)
	src, err := ndjsonsource.NewDir(data, ndjsonsource.Options{Index: ndjsonsource.IndexDir(filepath.Join(state, "patient-index"))})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range engineCases() {
		name := strings.NewReplacer(" ", "_", ",", "", ":", "").Replace(strings.TrimPrefix(c.name, "engine: "))
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			for i := 0; i < b.N; i++ {
				if _, err := engineRun(ctx, jobs, files, src, c, size, Throughput{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
