// Package bench is the harness behind bulkfhir-bench (make bench): on one
// generated dataset it measures the export path side by side (a raw copy
// baseline, the engine with several request shapes, the embedded server end
// to end over HTTP, the FHIR REST source, the S3 file store on MinIO), the
// memory of one export chunk at two sizes, the API's latency under 50
// concurrent clients, and the AWS path's requests per export, priced into a
// cost per million resources. It prints a markdown report and writes JSON.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// discard is the logger of the steps the harness calls.
var discard = slog.New(slog.NewJSONHandler(io.Discard, nil))

// Options configure a run.
type Options struct {
	Patients int
	// Work is a scratch directory (removed by the caller).
	Work string
	// Exe is the bulkfhir binary: the end-to-end and latency runs start
	// `Exe serve`.
	Exe string
	// Self is the bench binary: the memory runs start
	// `Self --memory-chunk DIR`.
	Self string
	// MemoryMB are the sizes of the single-type files the memory runs
	// export (default 100 and 1024).
	MemoryMB []int
	// Clients is the number of concurrent API clients (default 50).
	Clients int
	// CostResources is the size of the cost model's export (default one
	// million resources).
	CostResources int64
	// AWS runs the S3 and cost figures on the emulators (MinIO, DynamoDB
	// Local); off, they are reported as skipped.
	AWS bool
	// Only names the one step to run ("engine", "rest source", "http",
	// "memory", "aws"); "" runs every step.
	Only string
	Log  *slog.Logger
}

// Report holds every figure of a run.
type Report struct {
	When      time.Time `json:"when"`
	GoVersion string    `json:"goVersion"`
	CPUs      int       `json:"cpus"`
	Platform  string    `json:"platform"`
	Patients  int       `json:"patients"`
	Resources int64     `json:"resources"`
	Bytes     int64     `json:"bytes"`

	Throughput []Throughput `json:"throughput"`
	Memory     []Memory     `json:"memory"`
	Latency    []Latency    `json:"latency"`
	Cost       *Cost        `json:"cost,omitempty"`
	// Compression: bytes stored and transferred before and after (compression.go).
	Compression *Compression  `json:"compression,omitempty"`
	Skipped     []string      `json:"skipped,omitempty"`
	Elapsed     time.Duration `json:"elapsedNs"`
	// LoadStart and LoadEnd are the machine's load averages (1, 5, 15
	// minutes) when the run started and ended: the figures are ratios on
	// a shared machine.
	LoadStart string `json:"loadAverageStart,omitempty"`
	LoadEnd   string `json:"loadAverageEnd,omitempty"`
}

// Throughput is one timed export (or copy).
type Throughput struct {
	Name      string  `json:"name"`
	Resources int64   `json:"resources"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
	PerSec    float64 `json:"resourcesPerSecond"`
	MBPerSec  float64 `json:"mbPerSecond"`
	// SourceMBPerSec is the source bytes read per second (the engine
	// rows and the baselines).
	SourceMBPerSec float64 `json:"sourceMbPerSecond,omitempty"`
	// Ratio is the figure over the plain baseline's MB/s (0 for the
	// baseline): source MB/s for the engine rows, MB/s for the others.
	Ratio float64 `json:"ratioToBaseline,omitempty"`
	Note  string  `json:"note,omitempty"`
	// Runs is how many runs the figure is the median of, Spread the
	// range of their ratios to the baseline of the same round.
	Runs   int    `json:"runs,omitempty"`
	Spread string `json:"ratioSpread,omitempty"`
	// Target is the figure's goal; ReadBytes of SourceBytes is what an
	// export read of its source (rows with a read target).
	Target  *Target `json:"target,omitempty"`
	Verdict string  `json:"verdict,omitempty"`
	// Caveat qualifies a met verdict that the run cannot vouch for (a
	// baseline bound by the disk rather than the copy).
	Caveat      string `json:"caveat,omitempty"`
	ReadBytes   int64  `json:"sourceBytesRead,omitempty"`
	SourceBytes int64  `json:"sourceBytes,omitempty"`
}

func throughput(name string, resources, bytes int64, d time.Duration, note string) Throughput {
	s := d.Seconds()
	return Throughput{Name: name, Resources: resources, Bytes: bytes, Seconds: s,
		PerSec: float64(resources) / s, MBPerSec: float64(bytes) / s / 1e6, Note: note}
}

// Run measures everything the options allow.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Patients <= 0 {
		o.Patients = 1000
	}
	if len(o.MemoryMB) == 0 {
		o.MemoryMB = []int{100, 1024}
	}
	if o.Clients <= 0 {
		o.Clients = 50
	}
	if o.CostResources <= 0 {
		o.CostResources = 1_000_000
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	}
	start := time.Now()
	rep := &Report{When: start.UTC(), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, Patients: o.Patients, LoadStart: loadAverage()}
	data := filepath.Join(o.Work, "data")
	fmt.Fprintf(os.Stderr, "bench: generating %d patients\n", o.Patients)
	counts, err := sampledata.Generate(data, sampledata.Options{Patients: o.Patients, Seed: 1})
	if err != nil {
		return nil, err
	}
	for _, n := range counts {
		rep.Resources += int64(n)
	}
	files, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			rep.Bytes += st.Size()
		}
	}
	steps := []struct {
		name string
		fn   func() error
	}{
		{"engine", func() error { return engineFigures(ctx, o, data, rep) }},
		{"rest source", func() error { return restFigure(ctx, o, data, rep) }},
		{"http", func() error { return httpFigures(ctx, o, data, rep) }},
		{"memory", func() error { return memoryFigures(ctx, o, rep) }},
		{"aws", func() error { return awsFigures(ctx, o, data, rep) }},
	}
	for _, st := range steps {
		if o.Only != "" && st.name != o.Only {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s\n", st.name)
		if err := st.fn(); err != nil {
			return nil, fmt.Errorf("bench %s: %w", st.name, err)
		}
	}
	rep.Elapsed = time.Since(start)
	rep.LoadEnd = loadAverage()
	for i := range rep.Throughput {
		rep.Throughput[i].Verdict = rep.Throughput[i].verdict()
	}
	return rep, nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Markdown renders the report with the targets next to the figures.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bulkfhir-bench, %s: %s, %d CPUs, %s; %d patients = %d resources, %.1f MB of NDJSON; run took %s.\n\n",
		r.When.Format("2006-01-02"), r.GoVersion, r.CPUs, r.Platform, r.Patients, r.Resources, float64(r.Bytes)/1e6, r.Elapsed.Round(time.Second))
	if r.LoadStart != "" {
		fmt.Fprintf(&b, "Load average (1, 5, 15 min) at the start: %s; at the end: %s. The machine is shared: read the ratios to the baseline of the same run, not the absolute figures.\n\n", r.LoadStart, r.LoadEnd)
	}
	b.WriteString("| export path | resources | MB | seconds | resources/s | MB/s | source MB/s | vs baseline | target | verdict | note |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n")
	for _, t := range r.Throughput {
		src := ""
		if t.SourceMBPerSec > 0 {
			src = fmt.Sprintf("%.1f", t.SourceMBPerSec)
		}
		ratio := ""
		if t.Ratio > 0 {
			ratio = fmt.Sprintf("%.0f %%", t.Ratio*100)
		}
		note := t.Note
		if t.Runs > 1 {
			note = fmt.Sprintf("median of %d runs (ratios %s); %s", t.Runs, t.Spread, note)
			if t.Spread == "" {
				note = fmt.Sprintf("median of %d runs; %s", t.Runs, t.Note)
			}
		}
		if t.SourceBytes > 0 {
			note += fmt.Sprintf("; read %.2f MB of the %.1f MB source (%.2f %%)", float64(t.ReadBytes)/1e6, float64(t.SourceBytes)/1e6, 100*float64(t.ReadBytes)/float64(t.SourceBytes))
		}
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.2f | %.0f | %.1f | %s | %s | %s | %s | %s |\n",
			t.Name, t.Resources, float64(t.Bytes)/1e6, t.Seconds, t.PerSec, t.MBPerSec, src, ratio, t.goal(), t.shownVerdict(), note)
	}
	b.WriteString("\nMB and MB/s are what a row wrote. The baseline copies the source byte for byte into the file store without compression, fsynced like an export's commits; \"vs baseline\" is, for the engine rows, the source bytes the export read per second over the baseline's bytes per second in the same round (time on the same input, so `_elements` and Group exports are not penalised for writing less), and for the other rows MB/s over the median baseline.\n")
	b.WriteString(r.missedTargets())
	if len(r.Memory) > 0 {
		b.WriteString("\n| one ExportChunk of one type | resources | seconds | peak heap MiB | peak RSS MiB |\n|---|---:|---:|---:|---:|\n")
		for _, m := range r.Memory {
			fmt.Fprintf(&b, "| %d MB | %d | %.1f | %.1f | %.1f |\n", m.SizeMB, m.Resources, m.Seconds, m.PeakHeapMiB, m.PeakRSSMiB)
		}
		b.WriteString("\nTarget: flat, ≤ 64 MiB at any size.\n")
	}
	if len(r.Latency) > 0 {
		b.WriteString("\n| API call, concurrent clients | requests | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n")
		for _, l := range r.Latency {
			fmt.Fprintf(&b, "| %s, %d | %d | %.2f | %.2f | %.2f |\n", l.Name, l.Clients, l.Requests, l.P50ms, l.P99ms, l.MaxMs)
		}
		b.WriteString("\nTarget: kick-off p99 ≤ 10 ms locally.\n")
	}
	if r.Cost != nil {
		b.WriteString(r.Cost.markdown())
	}
	if r.Compression != nil {
		b.WriteString(r.Compression.markdown())
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(&b, "\nSkipped: %s\n", s)
	}
	return b.String()
}
