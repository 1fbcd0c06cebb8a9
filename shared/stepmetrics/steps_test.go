package stepmetrics_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/metrics"
	"github.com/bulkfhir/bulkfhir/shared/stepmetrics"
)

// emfUnits are the units CloudWatch accepts in an EMF directive.
var emfUnits = map[string]bool{"Seconds": true, "Microseconds": true, "Milliseconds": true, "Bytes": true, "Kilobytes": true,
	"Megabytes": true, "Gigabytes": true, "Terabytes": true, "Bits": true, "Kilobits": true, "Megabits": true, "Gigabits": true,
	"Terabits": true, "Percent": true, "Count": true, "Bytes/Second": true, "Kilobytes/Second": true, "Megabytes/Second": true,
	"Gigabytes/Second": true, "Terabytes/Second": true, "Bits/Second": true, "Kilobits/Second": true, "Megabits/Second": true,
	"Gigabits/Second": true, "Terabits/Second": true, "Count/Second": true, "None": true}

// checkEMF validates one line against the Embedded Metric Format
// specification: a root _aws object with an integer Timestamp and a
// non-empty CloudWatchMetrics array; each directive has a Namespace,
// Dimensions (arrays of at most 30 names, each a string member of the
// root) and Metrics (at most 100, each with a Name that is a number
// member of the root and a valid Unit). It returns the decoded line.
func checkEMF(line []byte) (map[string]any, error) {
	var root map[string]any
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&root); err != nil {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	meta, ok := root["_aws"].(map[string]any)
	if !ok {
		return nil, fmt.Errorf("no _aws object")
	}
	ts, ok := meta["Timestamp"].(json.Number)
	if _, err := ts.Int64(); !ok || err != nil {
		return nil, fmt.Errorf("Timestamp %v is not an integer (epoch milliseconds)", meta["Timestamp"])
	}
	directives, ok := meta["CloudWatchMetrics"].([]any)
	if !ok || len(directives) == 0 {
		return nil, fmt.Errorf("no CloudWatchMetrics directives")
	}
	for _, raw := range directives {
		dir, _ := raw.(map[string]any)
		if ns, _ := dir["Namespace"].(string); ns == "" {
			return nil, fmt.Errorf("directive without Namespace")
		}
		dims, ok := dir["Dimensions"].([]any)
		if !ok {
			return nil, fmt.Errorf("directive without Dimensions")
		}
		for _, set := range dims {
			names, ok := set.([]any)
			if !ok || len(names) > 30 {
				return nil, fmt.Errorf("dimension set %v", set)
			}
			for _, n := range names {
				name, _ := n.(string)
				if v, ok := root[name].(string); !ok || v == "" {
					return nil, fmt.Errorf("dimension %q has no string value in the root", name)
				}
			}
		}
		ms, ok := dir["Metrics"].([]any)
		if !ok || len(ms) == 0 || len(ms) > 100 {
			return nil, fmt.Errorf("Metrics %v", dir["Metrics"])
		}
		for _, m := range ms {
			md, _ := m.(map[string]any)
			name, _ := md["Name"].(string)
			if _, ok := root[name].(json.Number); !ok {
				return nil, fmt.Errorf("metric %q has no number value in the root", name)
			}
			if unit, _ := md["Unit"].(string); !emfUnits[unit] {
				return nil, fmt.Errorf("metric %q has unit %q", name, md["Unit"])
			}
		}
	}
	return root, nil
}

// directive returns the names and units the line declares.
func declared(root map[string]any) map[string]string {
	out := map[string]string{}
	for _, raw := range root["_aws"].(map[string]any)["CloudWatchMetrics"].([]any) {
		for _, m := range raw.(map[string]any)["Metrics"].([]any) {
			md := m.(map[string]any)
			out[md["Name"].(string)] = md["Unit"].(string)
		}
	}
	return out
}

func TestEMFLinesOfAnExport(t *testing.T) {
	ctx := context.Background()
	var lines []string
	for i := 0; i < 1200; i++ {
		lines = append(lines, fmt.Sprintf(`{"resourceType":"Patient","id":"p%04d","meta":{"lastUpdated":"2025-01-01T00:00:00Z"}}`, i))
	}
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines}}
	jobs, files := exporttest.NewJobStore(), exporttest.NewFileStore()
	clock := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	tick := func() time.Time { clock = clock.Add(250 * time.Millisecond); return clock }
	inner := export.NewSteps(jobs, files, src, export.Config{ChunkBudget: time.Nanosecond}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	inner.SetClock(tick)
	created := clock
	if err := jobs.Create(ctx, &export.Job{ID: "job1", Owner: "c", Status: export.StatusAccepted, TransactionTime: clock, CreatedAt: created,
		Request: bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	emf := metrics.NewEMF(&out, "bulkfhir", "prod-stack")
	steps := stepmetrics.New(inner, jobs, src, emf)
	// The wrapper's own clock: one tick between the two reads around a chunk.
	wrapperClock := created
	steps.SetClock(func() time.Time { wrapperClock = wrapperClock.Add(250 * time.Millisecond); return wrapperClock })

	plan, err := steps.Plan(ctx, export.JobRef{JobID: "job1"})
	if err != nil {
		t.Fatal(err)
	}
	units, err := steps.Units(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	chunks := 0
	for _, u := range units {
		var cur *export.Cursor
		for {
			res, err := steps.ExportChunk(ctx, export.ChunkInput{JobID: "job1", Unit: u, Cursor: cur})
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			if res.Done {
				break
			}
			cur = res.Cursor
		}
	}
	fin, err := steps.Finalize(ctx, export.JobRef{JobID: "job1"})
	if err != nil {
		t.Fatal(err)
	}
	// A repeated Finalize (a retried task) counts nothing more.
	if _, err := steps.Finalize(ctx, export.JobRef{JobID: "job1"}); err != nil {
		t.Fatal(err)
	}
	if chunks < 2 {
		t.Fatalf("%d chunks; the test wants several", chunks)
	}

	var chunkLines, completions int
	var resources, bytesSum float64
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		root, err := checkEMF(sc.Bytes())
		if err != nil {
			t.Fatalf("line is not valid EMF: %v: %s", err, sc.Text())
		}
		if root["job"] != "job1" || root[metrics.DimensionStack] != "prod-stack" {
			t.Errorf("line lacks job or Stack: %s", sc.Text())
		}
		dirs := root["_aws"].(map[string]any)["CloudWatchMetrics"].([]any)
		if d := dirs[0].(map[string]any); d["Namespace"] != "bulkfhir" || js(d["Dimensions"]) != `[["Stack"]]` {
			t.Errorf("directive %v", d)
		}
		decl := declared(root)
		num := func(name string) float64 { f, _ := root[name].(json.Number).Float64(); return f }
		switch {
		case decl[metrics.ChunkResources] != "":
			chunkLines++
			for name, unit := range map[string]string{metrics.ChunkResources: "Count", metrics.ChunkBytes: "Bytes", metrics.ChunkDuration: "Milliseconds",
				metrics.ChunkResourcesPerSecond: "Count/Second", metrics.SourceRetries: "Count", metrics.SourceThrottled: "Count"} {
				if decl[name] != unit {
					t.Errorf("chunk line: %s unit %q, want %q", name, decl[name], unit)
				}
			}
			resources += num(metrics.ChunkResources)
			bytesSum += num(metrics.ChunkBytes)
			if num(metrics.ChunkDuration) != 250 {
				t.Errorf("chunk duration = %v ms, want 250 (one tick)", num(metrics.ChunkDuration))
			}
			if want := num(metrics.ChunkResources) * 4; num(metrics.ChunkResourcesPerSecond) != want {
				t.Errorf("resources/s = %v, want %v", num(metrics.ChunkResourcesPerSecond), want)
			}
		case decl[metrics.ExportsCompleted] != "":
			completions++
			if num(metrics.JobResources) != float64(fin.Resources) || num(metrics.JobBytes) != float64(fin.Bytes) || num(metrics.JobFiles) != float64(fin.Files) {
				t.Errorf("completion line %s, want %+v", sc.Text(), fin)
			}
			if decl[metrics.JobDuration] != "Seconds" || num(metrics.JobDuration) <= 0 {
				t.Errorf("job duration %v %v", decl[metrics.JobDuration], root[metrics.JobDuration])
			}
		case decl[metrics.ExportsStarted] != "":
			if decl[metrics.QueueWait] != "Seconds" || num(metrics.QueueWait) <= 0 {
				t.Errorf("start line %s", sc.Text())
			}
		default:
			t.Errorf("unexpected line %s", sc.Text())
		}
	}
	if chunkLines != chunks || completions != 1 {
		t.Errorf("%d chunk lines for %d chunks, %d completion lines; want one each", chunkLines, chunks, completions)
	}
	if resources != 1200 || resources != float64(fin.Resources) || bytesSum != float64(fin.Bytes) {
		t.Errorf("chunk lines sum to %v resources, %v bytes; the job wrote %d, %d", resources, bytesSum, fin.Resources, fin.Bytes)
	}
}

// TestCheckEMFCanFail: the validator rejects lines that break the spec.
func TestCheckEMFCanFail(t *testing.T) {
	good := `{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["Stack"]],"Metrics":[{"Name":"X","Unit":"Count"}]}]},"Stack":"s","X":1}`
	if _, err := checkEMF([]byte(good)); err != nil {
		t.Fatalf("a valid line was refused: %v", err)
	}
	for name, bad := range map[string]string{
		"no dimension value": strings.Replace(good, `"Stack":"s",`, "", 1),
		"no metric value":    strings.Replace(good, `,"X":1`, "", 1),
		"bad unit":           strings.Replace(good, `"Count"`, `"Resources"`, 1),
		"no namespace":       strings.Replace(good, `"Namespace":"n",`, "", 1),
		"float timestamp":    strings.Replace(good, `"Timestamp":1`, `"Timestamp":1.5`, 1),
	} {
		if _, err := checkEMF([]byte(bad)); err == nil {
			t.Errorf("%s: accepted %s", name, bad)
		}
	}
}

func js(v any) string { b, _ := json.Marshal(v); return string(b) }
