package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	// With --data the export's selection is known, so organized blocks are
	// checked against it (each resource in the block of the patient the
	// server must put it in); an error reading it waits for the manifest
	// checks, which need no source.
	blocks := &bulkclient.Blocks{}
	var sel *selection
	var selErr error
	if *data != "" {
		if sel, selErr = selectionOf(ctx, sink, *out, *data); selErr == nil {
			blocks.Patients, blocks.FirstOwner = sel.blockPatients, true
		}
	}
	res, problems, err := checkManifest(ctx, sink, blocks)
	if err != nil {
		return err
	}
	for _, p := range problems {
		fmt.Fprintln(stdout, "PROBLEM", p)
	}
	if len(problems) > 0 {
		return fmt.Errorf("verify: %s does not match its manifest (%d problems)", *out, len(problems))
	}
	organized := ""
	if res.organizedBy != "" {
		organized = fmt.Sprintf(", in %d blocks by %s", res.blocks, res.organizedBy)
	}
	fmt.Fprintf(stdout, "manifest: %d files, %d resources of %d types%s in %s, as the manifest lists\n", res.files, res.total(), len(res.ids), organized, *out)
	if *data == "" {
		return nil
	}
	if selErr != nil {
		return selErr
	}
	want, unchecked := sel.expected(res.organizedBy != "")
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
	// organizedBy is the manifest's outputOrganizedBy; blocks counts the
	// block headers of its files (a split block once per file).
	organizedBy string
	blocks      int
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

// checkManifest compares a sink with its manifest.json. The output files of
// an organized export are checked block by block with blocks.
func checkManifest(ctx context.Context, sink bulkclient.Sink, blocks *bulkclient.Blocks) (exported, []string, error) {
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
	var head struct {
		OutputOrganizedBy string `json:"outputOrganizedBy"`
	}
	json.Unmarshal(raw, &head) // valid: ManifestFiles parsed it
	if res.organizedBy = head.OutputOrganizedBy; res.organizedBy != "" && res.organizedBy != "Patient" {
		return res, nil, fmt.Errorf("verify: the manifest's output is organized by %s; verify checks output organized by Patient only", res.organizedBy)
	}
	var problems []string
	listed := map[string]bool{}
	for _, f := range files {
		listed[f.Name] = true
		before := res.blocks
		n, err := checkFile(ctx, sink, f, &res, blocks)
		if errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, fmt.Sprintf("%s: listed in the manifest but absent", f.Name))
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", f.Name, err))
			continue
		}
		res.files++
		if headers := int64(res.blocks - before); f.Count != nil && !bulkclient.CountMatches(*f.Count, n, headers) {
			if headers > 0 {
				problems = append(problems, fmt.Sprintf("%s: %d resources and %d block headers, the manifest says %d", f.Name, n-headers, headers, *f.Count))
			} else {
				problems = append(problems, fmt.Sprintf("%s: %d resources, the manifest says %d", f.Name, n, *f.Count))
			}
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
	if res.organizedBy != "" {
		problems = append(problems, blocks.Chains(files)...)
	}
	sort.Strings(problems)
	return res, problems, nil
}

// checkFile reads one file: every line a JSON resource of the file's type
// (in an organized file, well-formed blocks), no id twice; it returns the
// number of lines, block headers included (counted in res.blocks).
func checkFile(ctx context.Context, sink bulkclient.Sink, f bulkclient.ManifestFile, res *exported, blocks *bulkclient.Blocks) (int64, error) {
	rc, err := sink.Open(ctx, f.Name)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	organized := f.Kind == "output" && f.Type == ""
	var n, line int64
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var typ, id string
		if organized {
			if typ, id, err = blocks.Line(f.Name, line, b); err != nil {
				return n, err
			}
			n++
			if typ == "" {
				res.blocks++ // a block header
				continue
			}
		} else {
			h, ok := fhir.Peek(b)
			if !ok {
				return n, fmt.Errorf("line %d is not a FHIR resource", line)
			}
			if h.ResourceType != f.Type {
				return n, fmt.Errorf("line %d is a %s in a %s file", line, h.ResourceType, f.Type)
			}
			n++
			typ, id = h.ResourceType, h.ID
		}
		if f.Kind != "output" {
			continue
		}
		if res.ids[typ] == nil {
			res.ids[typ] = map[string]bool{}
		}
		if res.ids[typ][id] {
			return n, fmt.Errorf("%s/%s exported twice", typ, id)
		}
		res.ids[typ][id] = true
	}
	return n, sc.Err()
}

// selection is what the recorded request selects from an NDJSON source.
type selection struct {
	req bulkclient.Request
	all []sourceResource // within _since/_until
	// patients are the selected patients (nil: every patient, for a
	// system export or a Patient export without patient).
	patients map[string]bool
	// blockPatients are the patients an organized export has blocks for:
	// the selected ones, or every Patient of the source when all are.
	blockPatients map[string]bool
}

type sourceResource struct {
	typ, id string
	line    []byte
}

// selectionOf reads the request recorded in an export folder and the
// source folder it is compared with.
func selectionOf(ctx context.Context, sink bulkclient.Sink, out, dir string) (*selection, error) {
	rec, err := bulkclient.ReadRecord(ctx, sink)
	if err != nil {
		return nil, fmt.Errorf("verify --data: %s has no record of its request (%s): %w", out, bulkclient.StateFile, err)
	}
	if rec.Request.StatusURL != "" {
		return nil, fmt.Errorf("verify --data: the export in %s was polled with --status, so its request is unknown; only its manifest was checked", out)
	}
	return readSelection(dir, rec.Request)
}

// readSelection reads the source folder and keeps what the request selects.
func readSelection(dir string, req bulkclient.Request) (*selection, error) {
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
			return nil, fmt.Errorf("verify: recorded _since/_until %q: %w", p.v, err)
		}
		*p.dst = &t
	}
	sel := &selection{req: req}
	groups := map[string][]byte{}
	everyPatient := map[string]bool{} // whatever its lastUpdated: a block heads even a filtered-out Patient
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
			switch h.ResourceType {
			case "Group":
				groups[h.ID] = line // membership, whatever its lastUpdated
			case "Patient":
				everyPatient[h.ID] = true
			}
			if t, ok := fhir.ParseLastUpdated(h.LastUpdated); ok && (since != nil && !t.After(*since) || until != nil && t.After(*until)) {
				continue
			}
			sel.all = append(sel.all, sourceResource{h.ResourceType, h.ID, line})
		}
		return sc.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("verify --data: %w", err)
	}
	switch req.Level {
	case "group":
		g, ok := groups[req.Group]
		if !ok {
			return nil, fmt.Errorf("verify --data: Group/%s is not in %s", req.Group, dir)
		}
		sel.patients = map[string]bool{}
		for _, id := range fhir.ActiveMembers(g) {
			sel.patients[id] = true
		}
	}
	if len(req.Patients) > 0 {
		picked := map[string]bool{}
		for _, p := range req.Patients {
			id := strings.TrimPrefix(p, "Patient/")
			if sel.patients == nil || sel.patients[id] {
				picked[id] = true
			}
		}
		sel.patients = picked
	}
	sel.blockPatients = sel.patients
	if sel.blockPatients == nil {
		sel.blockPatients = everyPatient
	}
	return sel, nil
}

// expected returns the resources the request selects by type, and the
// types with a _typeFilter, which verify does not evaluate. Output organized
// by Patient holds, at every level, only resources of the Patient
// compartment of some patient it has a block for.
func (sel *selection) expected(organized bool) (map[string]map[string]bool, map[string]bool) {
	req := sel.req
	unchecked := map[string]bool{}
	for _, f := range req.TypeFilters {
		if t, _, ok := strings.Cut(f, "?"); ok {
			unchecked[t] = true
		}
	}
	patients := sel.patients
	if organized {
		patients = sel.blockPatients
	}
	want := map[string]map[string]bool{}
	for _, r := range sel.all {
		if len(req.Types) > 0 && !slices.Contains(req.Types, r.typ) {
			continue
		}
		if organized || req.Level == "patient" || req.Level == "group" {
			if !fhir.InPatientCompartment(r.typ) {
				continue
			}
			in := false
			fhir.CompartmentPatients(r.typ, r.line, func(id string) bool {
				in = patients == nil || patients[id]
				// Organized, a Patient is in its own block only, never
				// in a linked patient's.
				return !in && !(organized && r.typ == "Patient")
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
	return want, unchecked
}
