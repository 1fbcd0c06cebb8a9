package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// verify checks an export folder against its own manifest: every listed
// file present, line counts equal to the manifest's, every line a resource
// of the file's type, no file the manifest does not list. With --data it
// also compares the resources with the NDJSON source, filtered by the
// request the export recorded (types, _since, _until, level, group,
// patients).
func verify(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	data := fs.String("data", "", "NDJSON source folder to compare with (optional)")
	out := fs.String("out", "out", "export folder (or s3://bucket/prefix) written by bulkfhir export")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected arguments %q", fs.Args())
	}
	var sink bulkclient.Sink = bulkclient.DirSink{Dir: *out}
	if strings.HasPrefix(*out, "s3://") {
		s, err := newS3Sink(ctx, *out)
		if err != nil {
			return err
		}
		sink = s
	}
	res, problems, err := checkManifest(ctx, sink)
	if err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, "PROBLEM", p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("verify: %s does not match its manifest (%d problems)", *out, len(problems))
	}
	fmt.Fprintf(stdout, "manifest: %d files, %d resources of %d types in %s, as the manifest lists\n", res.files, res.total(), len(res.ids), *out)
	if *data == "" {
		return nil
	}
	rec, err := bulkclient.ReadRecord(ctx, sink)
	if err != nil {
		return fmt.Errorf("verify --data: %s has no record of its request (%s): %w", *out, bulkclient.StateFile, err)
	}
	if rec.Request.StatusURL != "" {
		return fmt.Errorf("verify --data: the export in %s was polled with --status, so its request is unknown; only its manifest was checked", *out)
	}
	want, unchecked, err := expectedFromSource(*data, rec.Request)
	if err != nil {
		return err
	}
	bad := 0
	var types []string
	for t := range union(want, res.ids) {
		types = append(types, t)
	}
	sort.Strings(types)
	for _, t := range types {
		var missing, extra int
		for id := range want[t] {
			if !res.ids[t][id] {
				missing++
			}
		}
		for id := range res.ids[t] {
			if !want[t][id] {
				extra++
			}
		}
		if unchecked[t] {
			// A _typeFilter the verifier cannot evaluate: the export must be
			// a subset of what the other filters allow.
			if extra > 0 {
				fmt.Fprintf(stdout, "MISMATCH %-20s %d exported resources are outside the request\n", t, extra)
				bad++
			}
			continue
		}
		if missing > 0 || extra > 0 {
			fmt.Fprintf(stdout, "MISMATCH %-20s exported %d, the request selects %d from the source: %d missing, %d not asked for\n",
				t, len(res.ids[t]), len(want[t]), missing, extra)
			bad++
		}
	}
	if bad > 0 {
		return fmt.Errorf("verify: %d types differ from what the request selects in %s", bad, *data)
	}
	note := ""
	if len(unchecked) > 0 {
		note = fmt.Sprintf(" (%d types with a _typeFilter checked as a subset only)", len(unchecked))
	}
	fmt.Fprintf(stdout, "verified: %d resources of %d types in %s are what the request selects from %s%s\n", res.total(), len(types), *out, *data, note)
	return nil
}

type exported struct {
	files int
	ids   map[string]map[string]bool // type → ids of the output files
}

func (e exported) total() int {
	n := 0
	for _, m := range e.ids {
		n += len(m)
	}
	return n
}

func union(a, b map[string]map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// checkManifest compares a sink with its manifest.json.
func checkManifest(ctx context.Context, sink bulkclient.Sink) (exported, []string, error) {
	res := exported{ids: map[string]map[string]bool{}}
	rc, err := sink.Open(ctx, "manifest.json")
	if errors.Is(err, fs.ErrNotExist) {
		return res, nil, fmt.Errorf("verify: %s has no manifest.json: not a folder written by bulkfhir export (or the export did not finish)", sink.Location())
	}
	if err != nil {
		return res, nil, fmt.Errorf("verify: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(rc, 256<<20))
	rc.Close()
	if err != nil {
		return res, nil, fmt.Errorf("verify: manifest.json: %w", err)
	}
	files, err := bulkclient.ManifestFiles(raw)
	if err != nil {
		return res, nil, fmt.Errorf("verify: %w", err)
	}
	var problems []string
	listed := map[string]bool{}
	for _, f := range files {
		listed[f.Name] = true
		n, err := checkFile(ctx, sink, f, res.ids)
		if errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, fmt.Sprintf("%s: listed in the manifest but absent", f.Name))
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f.Name, err))
			continue
		}
		res.files++
		if f.Count != nil && *f.Count != n {
			problems = append(problems, fmt.Sprintf("%s: %d resources, the manifest says %d", f.Name, n, *f.Count))
		}
	}
	names, err := sink.List(ctx)
	if err != nil {
		return res, nil, fmt.Errorf("verify: %w", err)
	}
	for _, n := range names {
		if listed[n] || n == "manifest.json" || n == bulkclient.StateFile || strings.HasPrefix(n, "attachments/") {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s: not in the manifest (left from another export, or unfinished)", n))
	}
	sort.Strings(problems)
	return res, problems, nil
}

// checkFile reads one file: every line a JSON resource of the file's type,
// no id twice; it returns the number of resources.
func checkFile(ctx context.Context, sink bulkclient.Sink, f bulkclient.ManifestFile, ids map[string]map[string]bool) (int64, error) {
	rc, err := sink.Open(ctx, f.Name)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	var n, line int64
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		h, ok := fhir.Peek(b)
		if !ok {
			return n, fmt.Errorf("line %d is not a FHIR resource", line)
		}
		if h.ResourceType != f.Type {
			return n, fmt.Errorf("line %d is a %s in a %s file", line, h.ResourceType, f.Type)
		}
		n++
		if f.Kind != "output" {
			continue
		}
		if ids[f.Type] == nil {
			ids[f.Type] = map[string]bool{}
		}
		if ids[f.Type][h.ID] {
			return n, fmt.Errorf("%s/%s exported twice", f.Type, h.ID)
		}
		ids[f.Type][h.ID] = true
	}
	return n, sc.Err()
}

// expectedFromSource reads the source folder and keeps what the request
// selects. Types with a _typeFilter are returned in unchecked: the filter
// itself is not evaluated here.
func expectedFromSource(dir string, req bulkclient.Request) (map[string]map[string]bool, map[string]bool, error) {
	var since, until *time.Time
	for _, p := range []struct {
		v   string
		dst **time.Time
	}{{req.Since, &since}, {req.Until, &until}} {
		if p.v == "" {
			continue
		}
		t, err := fhir.ParseInstant(p.v)
		if err != nil {
			return nil, nil, fmt.Errorf("verify: recorded _since/_until %q: %w", p.v, err)
		}
		*p.dst = &t
	}
	type res struct {
		typ, id string
		line    []byte
	}
	var all []res
	groups := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".ndjson") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 512<<20)
		for sc.Scan() {
			b := bytes.TrimSpace(sc.Bytes())
			h, ok := fhir.Peek(b)
			if !ok {
				continue
			}
			line := append([]byte(nil), b...)
			if h.ResourceType == "Group" {
				groups[h.ID] = line // membership, whatever its lastUpdated
			}
			if t, ok := fhir.ParseLastUpdated(h.LastUpdated); ok && (since != nil && !t.After(*since) || until != nil && t.After(*until)) {
				continue
			}
			all = append(all, res{h.ResourceType, h.ID, line})
		}
		return sc.Err()
	})
	if err != nil {
		return nil, nil, fmt.Errorf("verify --data: %w", err)
	}
	var patients map[string]bool // nil: every patient
	switch req.Level {
	case "group":
		g, ok := groups[req.Group]
		if !ok {
			return nil, nil, fmt.Errorf("verify --data: Group/%s is not in %s", req.Group, dir)
		}
		patients = map[string]bool{}
		for _, id := range fhir.ActiveMembers(g) {
			patients[id] = true
		}
	}
	if len(req.Patients) > 0 {
		sel := map[string]bool{}
		for _, p := range req.Patients {
			id := strings.TrimPrefix(p, "Patient/")
			if patients == nil || patients[id] {
				sel[id] = true
			}
		}
		patients = sel
	}
	unchecked := map[string]bool{}
	for _, f := range req.TypeFilters {
		if t, _, ok := strings.Cut(f, "?"); ok {
			unchecked[t] = true
		}
	}
	want := map[string]map[string]bool{}
	for _, r := range all {
		if len(req.Types) > 0 && !slices.Contains(req.Types, r.typ) {
			continue
		}
		if req.Level == "patient" || req.Level == "group" {
			if !fhir.InPatientCompartment(r.typ) {
				continue
			}
			in := false
			fhir.CompartmentPatients(r.typ, r.line, func(id string) bool {
				in = patients == nil || patients[id]
				return !in
			})
			if !in {
				continue
			}
		}
		if want[r.typ] == nil {
			want[r.typ] = map[string]bool{}
		}
		want[r.typ][r.id] = true
	}
	return want, unchecked, nil
}
