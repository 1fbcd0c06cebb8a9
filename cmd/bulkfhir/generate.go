package main

import (
	"flag"
	"fmt"
	"sort"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

func generate(args []string) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	patients := fs.Int("patients", 100, "number of patients")
	seed := fs.Uint64("seed", 1, "random seed (same seed and patients give the same files)")
	out := fs.String("out", "data", "output directory")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	start := time.Now()
	counts, err := sampledata.Generate(*out, sampledata.Options{Patients: *patients, Seed: *seed})
	if err != nil {
		return err
	}
	types := make([]string, 0, len(counts))
	total := 0
	for t, n := range counts {
		types = append(types, t)
		total += n
	}
	sort.Strings(types)
	for _, t := range types {
		fmt.Printf("%-20s %9d\n", t, counts[t])
	}
	el := time.Since(start)
	fmt.Printf("%-20s %9d  (%d patients, %.1fs, %.0f resources/s) in %s\n", "total", total, *patients, el.Seconds(), float64(total)/el.Seconds(), *out)
	return nil
}
