package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
)

// verify compares the resources per type in an export directory (as written
// by bulkfhir export) with an NDJSON source directory.
func verify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	data := fs.String("data", "data", "source NDJSON directory")
	out := fs.String("out", "out", "export directory written by bulkfhir export")
	if err := fs.Parse(args); err != nil {
		return err
	}
	src, err := ndjsonsource.New(*data, 0)
	if err != nil {
		return err
	}
	want, err := src.Counts(ctx)
	if err != nil {
		return err
	}
	got := map[string]int64{}
	files, _ := filepath.Glob(filepath.Join(*out, "*.ndjson"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 512<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var h struct{ ResourceType string }
			if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
				fh.Close()
				return fmt.Errorf("verify: %s: %w", f, err)
			}
			got[h.ResourceType]++
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return fmt.Errorf("verify: %s: %w", f, err)
		}
	}
	types := map[string]bool{}
	for t := range want {
		types[t] = true
	}
	for t := range got {
		types[t] = true
	}
	names := make([]string, 0, len(types))
	for t := range types {
		names = append(names, t)
	}
	sort.Strings(names)
	var total int64
	bad := 0
	for _, t := range names {
		if got[t] != want[t] {
			fmt.Printf("MISMATCH %-20s exported %d, source has %d\n", t, got[t], want[t])
			bad++
		}
		total += got[t]
	}
	if bad > 0 {
		return fmt.Errorf("verify: %d types differ from the source", bad)
	}
	fmt.Printf("verified: %d resources of %d types in %s match the source in %s\n", total, len(names), *out, *data)
	return nil
}
