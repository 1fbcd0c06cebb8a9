package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/memstat"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
)

// Memory is the peak memory of one ExportChunk over one type.
type Memory struct {
	SizeMB      int     `json:"sizeMB"`
	Resources   int64   `json:"resources"`
	Seconds     float64 `json:"seconds"`
	PeakHeapMiB float64 `json:"peakHeapMiB"`
	PeakRSSMiB  float64 `json:"peakRssMiB"`
}

const memObservation = `{"resourceType":"Observation","id":"obs-%09d","meta":{"lastUpdated":"2025-03-01T10:00:00.000Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},"subject":{"reference":"Patient/p-%06d"},"effectiveDateTime":"2025-03-01T10:00:00Z","valueQuantity":{"value":%d,"unit":"beats/min","system":"http://unitsofmeasure.org","code":"/min"}}`

// writeType writes about mb megabytes of Observations to dir.
func writeType(dir string, mb int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "Observation.ndjson"))
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	limit := int64(mb) * 1e6
	var n int64
	for i := 0; n < limit; i++ {
		k, _ := fmt.Fprintf(w, memObservation+"\n", i, i%100000, 50+i%70)
		n += int64(k)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// memoryFigures runs one chunk per size in a child process, so each
// process's peak RSS is the chunk's alone.
func memoryFigures(ctx context.Context, o Options, rep *Report) error {
	for _, mb := range o.MemoryMB {
		dir := filepath.Join(o.Work, fmt.Sprintf("mem-%d", mb))
		if err := writeType(filepath.Join(dir, "data"), mb); err != nil {
			return err
		}
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, o.Self, "--memory-chunk", dir)
		cmd.Stdout = &out
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("memory run %d MB: %w", mb, err)
		}
		var m Memory
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			return fmt.Errorf("memory run %d MB: %w: %s", mb, err, out.Bytes())
		}
		m.SizeMB = mb
		rep.Memory = append(rep.Memory, m)
		os.RemoveAll(dir)
	}
	return nil
}

// MeasureChunk exports DIR/data (one type) with a single ExportChunk into
// DIR/state and returns its figures; `bulkfhir-bench --memory-chunk DIR`
// prints them for memoryFigures.
func MeasureChunk(ctx context.Context, dir string) (*Memory, error) {
	src := ndjsonsource.NewFromObjects(ndjsonsource.Dir(filepath.Join(dir, "data")), ndjsonsource.Options{SegmentBytes: 1 << 50})
	jobs, files, err := localStores(filepath.Join(dir, "state"))
	if err != nil {
		return nil, err
	}
	defer jobs.Close()
	req := &bulkdata.Request{Level: bulkdata.LevelSystem, Types: []string{"Observation"}, OutputFormat: bulkdata.NDJSON}
	svc := export.NewService(jobs, files, idleRunner{}, src, export.Config{}, discard)
	job, err := svc.Kickoff(ctx, "bench", req, "bench", "")
	if err != nil {
		return nil, err
	}
	steps := export.NewSteps(jobs, files, src, export.Config{}, discard)
	plan, err := steps.Plan(ctx, export.JobRef{JobID: job.ID})
	if err != nil {
		return nil, err
	}
	units, err := steps.Units(ctx, plan)
	if err != nil {
		return nil, err
	}
	if len(units) != 1 {
		return nil, fmt.Errorf("%d units, want one", len(units))
	}
	sampler := memstat.Start(10 * time.Millisecond)
	start := time.Now()
	res, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: job.ID, Unit: units[0]})
	d := time.Since(start)
	peakHeap := sampler.Stop()
	if err != nil {
		return nil, err
	}
	if !res.Done {
		return nil, fmt.Errorf("the chunk stopped before the end of the type")
	}
	return &Memory{Resources: res.Cursor.Resources, Seconds: d.Seconds(),
		PeakHeapMiB: peakHeap, PeakRSSMiB: memstat.PeakRSS()}, nil
}
