// Command bulkfhir-bench measures the export path: throughput, memory,
// latency and, with --aws, the S3 path and the cost model on the
// emulators (make bench). It is a binary of its own so that the shipped
// bulkfhir binary links neither the harness, the test FHIR server nor the
// emulator launchers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/bulkfhir/bulkfhir/cmd/bulkfhir/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bulkfhir-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bulkfhir-bench", flag.ContinueOnError)
	bulkfhir := fs.String("bulkfhir", "bin/bulkfhir", "the bulkfhir binary the end-to-end and latency runs serve with")
	patients := fs.Int("patients", 1000, "patients in the generated dataset")
	out := fs.String("out", "build/bench", "directory for results.json and results.md")
	aws := fs.Bool("aws", false, "also measure the S3 path and the cost model on MinIO and DynamoDB Local (make tools installs them)")
	memory := fs.String("memory-mb", "100,1024", "sizes (MB) of the single-type exports whose peak memory is measured")
	clients := fs.Int("clients", 50, "concurrent clients of the latency run")
	costResources := fs.Int64("cost-resources", 1_000_000, "resources in the cost model's export (with --aws)")
	chunk := fs.String("memory-chunk", "", "internal: measure one export chunk over DIR/data and print JSON")
	workDir := fs.String("work", "", "directory for the scratch data (default: the system's temporary directory); on tmpfs (/dev/shm) the ratios are CPU-only, without the disk's writeback")
	only := fs.String("only", "", "run only this step: engine, rest source, http, memory or aws")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the harness's own process to FILE (go tool pprof)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *chunk != "" {
		m, err := bench.MeasureChunk(ctx, *chunk)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(m)
	}
	var sizes []int
	for _, f := range strings.Split(*memory, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("--memory-mb %q: want positive sizes in MB", *memory)
		}
		sizes = append(sizes, n)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	exe, err := filepath.Abs(*bulkfhir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(*workDir, "bulkfhir-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rep, err := bench.Run(ctx, bench.Options{Patients: *patients, Work: work, Exe: exe, Self: self, MemoryMB: sizes, Clients: *clients, AWS: *aws, CostResources: *costResources, Only: *only})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	md := rep.Markdown()
	if err := rep.WriteJSON(filepath.Join(*out, "results.json")); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	fmt.Fprintf(os.Stderr, "bulkfhir-bench: wrote %s and %s\n", filepath.Join(*out, "results.json"), filepath.Join(*out, "results.md"))
	return nil
}
