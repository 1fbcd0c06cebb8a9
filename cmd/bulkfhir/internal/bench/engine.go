package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirsource"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/gzfile"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// idleRunner starts nothing: the harness calls the steps itself.
type idleRunner struct{}

func (idleRunner) Start(context.Context, string) error { return nil }
func (idleRunner) Stop(context.Context, string) error  { return nil }

// exportRun is one export through the steps, timed from Plan to Finalize.
type exportRun struct {
	JobID            string
	Resources, Bytes int64
	Duration         time.Duration
	Units, Chunks    int
	// StepTimes are the durations of each step call, by step, for the
	// Lambda GB-second figure.
	StepTimes map[string]time.Duration
	StepCalls map[string]int
}

// runExport kicks off query at level (as a client would send it) and runs
// Plan, every unit's chunks one after the other (one core), and Finalize.
func runExport(ctx context.Context, jobs export.JobStore, files export.FileStore, src export.Source, cfg export.Config,
	level bulkdata.Level, group, query string) (*exportRun, error) {
	req, perr := bulkdata.Parse(bulkdata.Kickoff{Method: "GET", Level: level, GroupID: group, RawQuery: query, Now: time.Now()})
	if perr != nil {
		return nil, fmt.Errorf("kick-off %s: %s", query, perr.Outcome.JSON())
	}
	svc := export.NewService(jobs, files, idleRunner{}, src, cfg, discard)
	job, err := svc.Kickoff(ctx, "bench", req, "bench?"+query, "")
	if err != nil {
		return nil, err
	}
	steps := export.NewSteps(jobs, files, src, cfg, discard)
	run := &exportRun{JobID: job.ID, StepTimes: map[string]time.Duration{}, StepCalls: map[string]int{}}
	timed := func(step string, fn func() error) error {
		t := time.Now()
		err := fn()
		run.StepTimes[step] += time.Since(t)
		run.StepCalls[step]++
		return err
	}
	start := time.Now()
	var plan *export.PlanResult
	if err := timed("plan", func() (err error) { plan, err = steps.Plan(ctx, export.JobRef{JobID: job.ID}); return }); err != nil {
		return nil, err
	}
	units, err := steps.Units(ctx, plan)
	if err != nil {
		return nil, err
	}
	run.Units = len(units)
	for _, u := range units {
		var cur *export.Cursor
		for {
			var res *export.ChunkResult
			if err := timed("export", func() (err error) {
				res, err = steps.ExportChunk(ctx, export.ChunkInput{JobID: job.ID, Unit: u, Cursor: cur})
				return
			}); err != nil {
				return nil, err
			}
			run.Chunks++
			if res.Done {
				break
			}
			cur = res.Cursor
		}
	}
	var fin *export.FinalizeResult
	if err := timed("finalize", func() (err error) { fin, err = steps.Finalize(ctx, export.JobRef{JobID: job.ID}); return }); err != nil {
		return nil, err
	}
	run.Duration = time.Since(start)
	run.Resources, run.Bytes = fin.Resources, fin.Bytes
	return run, nil
}

// localStores opens a fresh bolt job store and directory file store.
func localStores(dir string) (*boltstore.Store, *dirstore.Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	jobs, err := boltstore.Open(filepath.Join(dir, "jobs.db"))
	if err != nil {
		return nil, nil, err
	}
	files, err := dirstore.Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		jobs.Close()
		return nil, nil, err
	}
	return jobs, files, nil
}

// Baseline keys: the plain copy's files end in .copy, which the file stores
// never compress (gzfile.Compressed); the compressed reference keeps the
// source's .ndjson names, which they compress as they compress exports.
const (
	baselinePlain      = "baseline-plain"
	baselineCompressed = "baseline-gzip"
)

// baselineKey is where the baseline stores copy i of the source file name.
func baselineKey(name string, compressed bool, i int) string {
	if compressed {
		return fmt.Sprintf("%s/%d/%s", baselineCompressed, i, filepath.Base(name))
	}
	return fmt.Sprintf("%s/%d/%s.copy", baselinePlain, i, filepath.Base(name))
}

// baselineCopies is how many times one baseline round copies the source:
// one copy of the bench's 130 MB takes about 0.2 s, too short to time on a
// shared machine.
const baselineCopies = 3

// baseline copies every source file (holding resources resources) into the
// file store byte for byte, copies times: the same reads and commits (a
// temporary file, fsync, rename) as an export, with no parsing. Plain, the
// copies go under keys the store does not compress: the ceiling the engine
// targets are ratios to. Compressed, under the keys an export uses, so the
// store compresses them as it compresses exports: what compression costs.
func baseline(ctx context.Context, data string, resources int64, files export.FileStore, compressed bool, copies int) (Throughput, error) {
	names, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	start := time.Now()
	var total int64
	buf := make([]byte, 256<<10)
	for i := 0; i < copies; i++ {
		for _, name := range names {
			n, err := copyFile(ctx, files, name, baselineKey(name, compressed, i), buf)
			if err != nil {
				return Throughput{}, err
			}
			total += n
		}
	}
	d := time.Since(start)
	name, note := "baseline: raw copy of the source files", "read + write + fsync, no parsing, no compression: the ceiling"
	if compressed {
		name, note = "reference: raw copy, compressed as the store stores it", fmt.Sprintf("the copy through gzfile at level %d: what compression costs", gzfile.Level)
	}
	t := throughput(name, resources*int64(copies), total, d, note)
	t.SourceMBPerSec = t.MBPerSec
	return t, nil
}

// copyFile copies the file name into the store at key.
func copyFile(ctx context.Context, files export.FileStore, name, key string, buf []byte) (int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w, err := files.Create(ctx, key)
	if err != nil {
		return 0, err
	}
	n, err := io.CopyBuffer(w, f, buf)
	if err != nil {
		w.Abort()
		return 0, err
	}
	return n, w.Commit()
}

// settle writes back what the previous step left in the page cache, outside
// any timing, so no step pays for the writeback of another (the baseline
// swung about 5x between runs without it).
func settle() { syscall.Sync() }

// engineRounds is how many times each engine figure and the baseline are
// measured, in turn (baseline, every case, baseline, …); each figure is the
// median, its ratio the median of its ratios to the baseline of its round.
const engineRounds = 3

// engineCase is one request shape of the engine figures.
type engineCase struct {
	name, level, group, query string
	target                    *Target
	read                      bool // report the source bytes read
}

// engineCases are the request shapes the bench times through the steps.
func engineCases() []engineCase {
	mid := sampledata.End.AddDate(-1, 0, 0).Format(time.RFC3339)
	return []engineCase{
		{"engine: system, unfiltered", "system", "", "", &Target{Min: 0.5}, false},
		{"engine: system, _since (last year)", "system", "", "_since=" + url.QueryEscape(mid), nil, false},
		{"engine: system, _elements=id,status,subject", "system", "", "_elements=id,status,subject", &Target{Min: 0.3}, false},
		{"engine: system, _type=Patient,Observation", "system", "", "_type=Patient,Observation", nil, false},
		{"engine: Group (even-cohort: half the patients)", "group", "even-cohort", "", &Target{Min: 0.3}, false},
		{"engine: Group (small-cohort: 5 patients), through the patient index", "group", "small-cohort", "", &Target{MaxRead: 0.01}, true},
	}
}

// engineRun runs one case and returns its row, its ratio to base: the
// source bytes the export read per second over the bytes the plain copy
// wrote per second (time on the same input), so an export that writes less
// than it reads (_elements, Group) is measured by what it had to get
// through.
func engineRun(ctx context.Context, jobs export.JobStore, files export.FileStore, src *ndjsonsource.Source, c engineCase, sourceBytes int64, base Throughput) (Throughput, error) {
	before := src.BytesRead()
	run, err := runExport(ctx, jobs, files, src, export.Config{}, bulkdata.Level(c.level), c.group, c.query)
	if err != nil {
		return Throughput{}, fmt.Errorf("%s: %w", c.name, err)
	}
	read := src.BytesRead() - before
	t := throughput(c.name, run.Resources, run.Bytes, run.Duration, fmt.Sprintf("%d units, one at a time", run.Units))
	t.SourceMBPerSec = float64(read) / run.Duration.Seconds() / 1e6
	if base.MBPerSec > 0 {
		t.Ratio = t.SourceMBPerSec / base.MBPerSec
	}
	t.Target = c.target
	if c.read {
		t.ReadBytes, t.SourceBytes = read, sourceBytes
	}
	return t, removeJob(ctx, files, run.JobID)
}

// engineFigures: the baseline, then the NDJSON source through the steps
// into the directory file store, for several request shapes, each
// engineRounds times in turn.
func engineFigures(ctx context.Context, o Options, data string, rep *Report) error {
	jobs, files, err := localStores(filepath.Join(o.Work, "engine"))
	if err != nil {
		return err
	}
	defer jobs.Close()
	// The source keeps its patient indexes beside the engine's state, as
	// bulkfhir serve keeps them in its state directory.
	src, err := ndjsonsource.NewDir(data, ndjsonsource.Options{Index: ndjsonsource.IndexDir(filepath.Join(o.Work, "engine", "patient-index"))})
	if err != nil {
		return err
	}
	cases := engineCases()
	// The first patient-level export builds the patient index (one pass
	// over the compartment types); it is timed on its own, once.
	if _, err := src.Types(ctx); err != nil { // the source's own type scan, not the index's
		return err
	}
	settle()
	t0, read0 := time.Now(), src.BytesRead()
	if _, err := runExport(ctx, jobs, files, src, export.Config{}, bulkdata.LevelGroup, "small-cohort", ""); err != nil {
		return fmt.Errorf("patient index build: %w", err)
	}
	indexBuild := throughput("patient index: the first Group export builds it (once per source version)", 0, src.BytesRead()-read0, time.Since(t0),
		"reads every object of the compartment types once; later exports read the index")

	var bases, zbases []Throughput
	runs := make([][]Throughput, len(cases))
	for round := 0; round < engineRounds; round++ {
		settle()
		base, err := baseline(ctx, data, rep.Resources, files, false, baselineCopies)
		if err != nil {
			return err
		}
		settle()
		zbase, err := baseline(ctx, data, rep.Resources, files, true, 1)
		if err != nil {
			return err
		}
		zbase.Ratio = zbase.MBPerSec / base.MBPerSec
		bases, zbases = append(bases, base), append(zbases, zbase)
		for _, dir := range []string{baselinePlain, baselineCompressed} {
			if err := files.DeleteJob(ctx, dir); err != nil {
				return err
			}
		}
		for i, c := range cases {
			settle()
			t, err := engineRun(ctx, jobs, files, src, c, rep.Bytes, base)
			if err != nil {
				return err
			}
			runs[i] = append(runs[i], t)
		}
	}
	b := median(bases)
	b.Note = fmt.Sprintf("%d copies a round, the rounds %s; %s", baselineCopies, mbSpread(bases), b.Note)
	z := median(zbases)
	z.Ratio = medianRatio(zbases)
	// A plain copy slower than the compressed one (which writes a
	// twelfth of the bytes) was bound by the disk, not by copying: ratios
	// to it flatter the engine.
	caveat := ""
	if z.Ratio > 1 {
		caveat = "baseline disk-bound"
		b.Note += "; slower than the compressed copy: bound by the disk's writes, so the ratios to it flatter the engine (--work /dev/shm gives CPU-only ratios)"
	}
	rep.Throughput = append(rep.Throughput, b, z)
	for i := range cases {
		m := median(runs[i])
		// The ratio is the median of the per-round ratios, so a round on
		// a slower machine does not mix with another's baseline.
		m.Ratio = medianRatio(runs[i])
		if m.Target != nil && m.Target.Min > 0 {
			m.Caveat = caveat
		}
		rep.Throughput = append(rep.Throughput, m)
	}
	rep.Throughput = append(rep.Throughput, indexBuild)
	return nil
}

// mbSpread is the range of the runs' MB/s, "min–max MB/s".
func mbSpread(runs []Throughput) string {
	lo, hi := runs[0].MBPerSec, runs[0].MBPerSec
	for _, t := range runs {
		lo, hi = min(lo, t.MBPerSec), max(hi, t.MBPerSec)
	}
	return fmt.Sprintf("%.0f–%.0f MB/s", lo, hi)
}

// medianRatio is the median of the runs' ratios to their baselines.
func medianRatio(runs []Throughput) float64 {
	r := make([]float64, len(runs))
	for i, t := range runs {
		r[i] = t.Ratio
	}
	sort.Float64s(r)
	return r[(len(r)-1)/2]
}

// removeJob deletes an export's files, so the rounds do not fill the disk.
func removeJob(ctx context.Context, files export.FileStore, jobID string) error {
	return files.DeleteJob(ctx, jobID)
}

// pageLatency is the fixed time the slow upstream takes for every search
// page, so the rows show how many pages the REST source keeps in flight.
const pageLatency = 20 * time.Millisecond

// pipelinedShare is the slow rows' target: the export within this share
// of the waits one page at a time adds up to.
const pipelinedShare = 0.6

// restFigure exports everything from the test FHIR server over loopback
// HTTP through the FHIR REST source: as fast as the server goes, then from
// a server that takes pageLatency per search page, once paged by keyset
// (an upstream that sorts by _lastUpdated), once by next links (one that
// cannot sort) and once for a Group. Each slow row is run one page at a
// time first (MaxInFlight 1, no sub-windows): its requests × pageLatency
// are the serial waits the pipelined export is held to.
func restFigure(ctx context.Context, o Options, data string, rep *Report) error {
	slow := func(r *http.Request, _ int64) *fhirtest.Fault {
		if r.URL.Path == "/metadata" || strings.HasPrefix(r.URL.Path, "/Group") {
			return nil
		}
		return &fhirtest.Fault{Delay: pageLatency}
	}
	// The slow upstream serves a small dataset in small pages, so the
	// time is the pages' latency, not the test server's own search work
	// (which grows with the data it searches).
	small := filepath.Join(o.Work, "rest-small")
	if _, err := sampledata.Generate(small, sampledata.Options{Patients: 100, Seed: 1}); err != nil {
		return err
	}
	for _, c := range []struct {
		name     string
		data     string
		pageSize int
		opts     fhirtest.Options
		slow     bool
		group    string
	}{
		{"FHIR REST source: test server on loopback, system export", data, 1000, fhirtest.Options{}, false, ""},
		{fmt.Sprintf("FHIR REST source: %s per page, keyset paging (upstream sorts); 100 patients, pages of 100", pageLatency), small, 100, fhirtest.Options{Fault: slow}, true, ""},
		{fmt.Sprintf("FHIR REST source: %s per page, next links (upstream cannot sort); 100 patients, pages of 100", pageLatency), small, 100, fhirtest.Options{Fault: slow, NoSort: true}, true, ""},
		{fmt.Sprintf("FHIR REST source: %s per page, Group even-cohort (a search per compartment parameter); 100 patients, pages of 100", pageLatency), small, 100, fhirtest.Options{Fault: slow}, true, "even-cohort"},
	} {
		var one restResult
		if c.slow {
			var err error
			if one, err = restRun(ctx, o, c.data, c.pageSize, c.opts, c.group, true); err != nil {
				return fmt.Errorf("%s, one page at a time: %w", c.name, err)
			}
		}
		res, err := restRun(ctx, o, c.data, c.pageSize, c.opts, c.group, false)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		note := fmt.Sprintf("%d upstream requests, pages of %d, at most %d pages in flight; the server shares the CPU", res.requests, c.pageSize, res.peak)
		t := throughput(c.name, res.run.Resources, res.run.Bytes, res.run.Duration, note)
		if c.slow {
			// One page at a time, the waits alone add up to requests ×
			// latency; an export faster than that had pages in flight
			// together.
			serial := time.Duration(one.requests) * pageLatency
			t.Note = fmt.Sprintf("%d upstream requests, at most %d pages in flight (sub-windows, later searches read ahead); "+
				"one page at a time: %d requests, whose waits alone add up to %.2f s, exported in %.2f s",
				res.requests, res.peak, one.requests, serial.Seconds(), one.run.Duration.Seconds())
			t.Target = &Target{MaxSeconds: pipelinedShare * serial.Seconds(),
				Goal: fmt.Sprintf("≤ %.0f %% of the serial waits (%.2f s)", pipelinedShare*100, pipelinedShare*serial.Seconds())}
		}
		if len(rep.Throughput) > 0 {
			t.Ratio = t.MBPerSec / rep.Throughput[0].MBPerSec
		}
		rep.Throughput = append(rep.Throughput, t)
	}
	return nil
}

// restResult is one export through the REST source: the run, the
// upstream requests and the most the upstream served at once.
type restResult struct {
	run            *exportRun
	requests, peak int64
}

// inFlight counts the search pages (of pageSize) a handler serves at
// once: not Plan's counts and probes.
type inFlight struct {
	next      http.Handler
	pageSize  string
	now, peak atomic.Int64
}

func (f *inFlight) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if q := r.URL.Query(); q.Get("_count") != f.pageSize || q.Has("_elements") {
		f.next.ServeHTTP(w, r)
		return
	}
	n := f.now.Add(1)
	for p := f.peak.Load(); n > p && !f.peak.CompareAndSwap(p, n); p = f.peak.Load() {
	}
	defer f.now.Add(-1)
	f.next.ServeHTTP(w, r)
}

// restRun exports from a fresh test server; oneAtATime reads one page at
// a time, as the REST source did before it kept pages in flight.
func restRun(ctx context.Context, o Options, data string, pageSize int, opts fhirtest.Options, group string, oneAtATime bool) (restResult, error) {
	up := fhirtest.New(opts)
	if err := up.LoadDir(data); err != nil {
		return restResult{}, err
	}
	counter := &inFlight{next: up, pageSize: strconv.Itoa(pageSize)}
	hs := httptest.NewServer(counter)
	defer hs.Close()
	so := fhirsource.Options{BaseURL: hs.URL, PageSize: pageSize, Log: o.Log}
	if oneAtATime {
		so.MaxInFlight, so.KeysetWindows = 1, 1
	}
	src, err := fhirsource.New(so)
	if err != nil {
		return restResult{}, err
	}
	jobs, files, err := localStores(filepath.Join(o.Work, fmt.Sprintf("rest-%d", time.Now().UnixNano())))
	if err != nil {
		return restResult{}, err
	}
	defer jobs.Close()
	level := bulkdata.LevelSystem
	if group != "" {
		level = bulkdata.LevelGroup
	}
	run, err := runExport(ctx, jobs, files, src, export.Config{}, level, group, "")
	if err != nil {
		return restResult{}, err
	}
	defer files.DeleteJob(ctx, run.JobID)
	return restResult{run: run, requests: up.Requests(), peak: counter.peak.Load()}, nil
}
