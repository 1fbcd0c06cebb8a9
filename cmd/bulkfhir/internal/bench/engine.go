package bench

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirsource"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
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

// baseline copies every source file (holding resources resources) into the
// file store, byte for byte: the same reads and writes as an export, with no
// parsing.
func baseline(ctx context.Context, data string, resources int64, files export.FileStore) (Throughput, error) {
	names, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	start := time.Now()
	var total int64
	buf := make([]byte, 256<<10)
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			return Throughput{}, err
		}
		w, err := files.Create(ctx, "baseline/"+filepath.Base(name))
		if err != nil {
			f.Close()
			return Throughput{}, err
		}
		n, err := io.CopyBuffer(w, f, buf)
		f.Close()
		if err != nil {
			w.Abort()
			return Throughput{}, err
		}
		if err := w.Commit(); err != nil {
			return Throughput{}, err
		}
		total += n
	}
	return throughput("baseline: raw copy of the source files", resources, total, time.Since(start), "read + write, no parsing: the ceiling"), nil
}

// engineFigures: the baseline, then the NDJSON source through the steps
// into the directory file store, for several request shapes.
func engineFigures(ctx context.Context, o Options, data string, rep *Report) error {
	jobs, files, err := localStores(filepath.Join(o.Work, "engine"))
	if err != nil {
		return err
	}
	defer jobs.Close()
	base, err := baseline(ctx, data, rep.Resources, files)
	if err != nil {
		return err
	}
	rep.Throughput = append(rep.Throughput, base)
	src, err := ndjsonsource.New(data, 0)
	if err != nil {
		return err
	}
	mid := sampledata.End.AddDate(-1, 0, 0).Format(time.RFC3339)
	cfg := export.Config{}
	cases := []struct {
		name, level, group, query string
	}{
		{"engine: system, unfiltered", "system", "", ""},
		{"engine: system, _since (last year)", "system", "", "_since=" + url.QueryEscape(mid)},
		{"engine: system, _elements=id,status,subject", "system", "", "_elements=id,status,subject"},
		{"engine: system, _type=Patient,Observation", "system", "", "_type=Patient,Observation"},
		{"engine: Group (even-cohort: half the patients)", "group", "even-cohort", ""},
	}
	for _, c := range cases {
		run, err := runExport(ctx, jobs, files, src, cfg, bulkdata.Level(c.level), c.group, c.query)
		if err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		t := throughput(c.name, run.Resources, run.Bytes, run.Duration, fmt.Sprintf("%d units, one at a time", run.Units))
		t.Ratio = t.MBPerSec / base.MBPerSec
		rep.Throughput = append(rep.Throughput, t)
	}
	return nil
}

// restFigure exports everything from the test FHIR server over loopback
// HTTP through the FHIR REST source.
func restFigure(ctx context.Context, o Options, data string, rep *Report) error {
	up := fhirtest.New(fhirtest.Options{})
	if err := up.LoadDir(data); err != nil {
		return err
	}
	hs := httptest.NewServer(up)
	defer hs.Close()
	src, err := fhirsource.New(fhirsource.Options{BaseURL: hs.URL, PageSize: 1000, Log: o.Log})
	if err != nil {
		return err
	}
	jobs, files, err := localStores(filepath.Join(o.Work, "rest"))
	if err != nil {
		return err
	}
	defer jobs.Close()
	run, err := runExport(ctx, jobs, files, src, export.Config{}, bulkdata.LevelSystem, "", "")
	if err != nil {
		return err
	}
	t := throughput("FHIR REST source: test server on loopback, system export", run.Resources, run.Bytes, run.Duration,
		fmt.Sprintf("%d upstream requests, pages of 1000; the server shares the CPU", up.Requests()))
	if len(rep.Throughput) > 0 {
		t.Ratio = t.MBPerSec / rep.Throughput[0].MBPerSec
	}
	rep.Throughput = append(rep.Throughput, t)
	return nil
}
