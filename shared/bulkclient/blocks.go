package bulkclient

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"sort"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Blocks checks the output files of an export organized by Patient
// (organizeOutputBy=Patient, N-03): every file is made of blocks, each a
// Parameters header referencing a Patient, then that Patient when it is
// exported, then resources of that patient's compartment. A patient has one
// block, except that a block split across files goes on at the top of the
// file its item's continuesInFile names, under the same header.
//
// Feed every line of one file, in order, before the next file (Line), then
// call Chains once with the manifest's files. It holds one entry per block
// header, not the resources.
type Blocks struct {
	// Patients, when set, are the patients the export may have blocks for:
	// a block of another patient is refused. Nil accepts any patient.
	Patients map[string]bool
	// FirstOwner, when Patients is exactly the export's selection, also
	// requires each resource to be in the block of the first selected
	// patient (by id) whose compartment holds it, where the server puts a
	// resource shared by several of them.
	FirstOwner bool
	// Types, when set, are the resource types asked for; a line of another
	// type (other than a block header) is refused.
	Types map[string]bool

	file    string // the file being read
	patient string // the block being read; "" before the file's first header
	fresh   bool   // the last line was a header
	files   map[string]*blockFile
	heads   []blockHead
}

type blockFile struct{ first, last string }

type blockHead struct {
	file    string
	first   bool // the file's first line
	patient string
}

// Line checks one line of an organized output file; line numbers start at 1.
// It returns the resource's type and id ("" for a block header), and an
// error for a line that breaks the rules.
func (b *Blocks) Line(file string, n int64, line []byte) (typ, id string, err error) {
	if b.files == nil {
		b.files = map[string]*blockFile{}
	}
	if file != b.file {
		b.file, b.patient, b.fresh = file, "", false
		b.files[file] = &blockFile{}
	}
	h, ok := fhir.Peek(line)
	if !ok {
		return "", "", fmt.Errorf("line %d is not a FHIR resource", n)
	}
	if h.ResourceType == "Parameters" {
		p, err := blockHeader(line)
		if err != nil {
			return "", "", fmt.Errorf("line %d: %w", n, err)
		}
		if b.Patients != nil && !b.Patients[p] {
			return "", "", fmt.Errorf("line %d heads a block of Patient/%s, who is not one of the export's patients", n, p)
		}
		f := b.files[file]
		if b.patient == "" {
			f.first = p
		}
		f.last = p
		b.heads = append(b.heads, blockHead{file: file, first: b.patient == "", patient: p})
		b.patient, b.fresh = p, true
		return "", "", nil
	}
	fresh := b.fresh
	b.fresh = false
	switch {
	case b.patient == "":
		return "", "", fmt.Errorf("line %d is a %s before any block header", n, h.ResourceType)
	case b.Types != nil && !b.Types[h.ResourceType]:
		return "", "", fmt.Errorf("line %d is a %s, a type the export did not ask for", n, h.ResourceType)
	case h.ResourceType == "Patient" && h.ID != b.patient:
		return "", "", fmt.Errorf("line %d is Patient/%s in the block of Patient/%s", n, h.ID, b.patient)
	case h.ResourceType == "Patient" && !fresh:
		return "", "", fmt.Errorf("line %d: Patient/%s is not right after its block header", n, h.ID)
	case h.ResourceType == "Patient":
		return h.ResourceType, h.ID, nil
	}
	var in bool
	var owner string
	fhir.CompartmentPatients(h.ResourceType, line, func(id string) bool {
		if id == b.patient {
			in = true
		}
		if b.Patients[id] && (owner == "" || id < owner) {
			owner = id
		}
		return true
	})
	if !in {
		return "", "", fmt.Errorf("line %d: %s/%s is in the block of Patient/%s, outside that patient's compartment", n, h.ResourceType, h.ID, b.patient)
	}
	if b.FirstOwner && owner != b.patient {
		return "", "", fmt.Errorf("line %d: %s/%s is in the block of Patient/%s, but belongs in that of Patient/%s, the first of the export's patients whose compartment holds it",
			n, h.ResourceType, h.ID, b.patient, owner)
	}
	return h.ResourceType, h.ID, nil
}

// Chains checks the continuesInFile links of the manifest's organized
// output files, once every file was read: each names a file of the
// manifest that starts with the header of the block it continues, no file
// is continued twice, and no patient has two blocks that no link joins.
func (b *Blocks) Chains(files []ManifestFile) []string {
	var problems []string
	continued := map[string]string{} // file → the patient its first block continues
	by := map[string]string{}        // file → the file that continues into it
	for _, f := range files {
		if f.Kind != "output" || f.ContinuesURL == "" {
			continue
		}
		from := b.files[f.Name]
		switch {
		case from == nil:
			continue // absent or unreadable: reported where it was read
		case f.ContinuesIn == "":
			problems = append(problems, fmt.Sprintf("%s: continuesInFile %s is not a file of the manifest", f.Name, f.ContinuesURL))
			continue
		case f.ContinuesIn == f.Name:
			problems = append(problems, fmt.Sprintf("%s: continuesInFile names the file itself", f.Name))
			continue
		case by[f.ContinuesIn] != "":
			problems = append(problems, fmt.Sprintf("%s: continued both from %s and from %s", f.ContinuesIn, by[f.ContinuesIn], f.Name))
			continue
		}
		by[f.ContinuesIn] = f.Name
		to := b.files[f.ContinuesIn]
		if to == nil {
			to = &blockFile{} // empty, absent or unreadable: it starts no block
		}
		if from.last == "" || to.first != from.last {
			problems = append(problems, fmt.Sprintf("%s: continues the block of Patient/%s from %s, but starts with %s",
				f.ContinuesIn, from.last, f.Name, orNone(to.first)))
			continue
		}
		continued[f.ContinuesIn] = from.last
	}
	blocks := map[string][]string{} // patient → files of blocks no link joins
	for _, h := range b.heads {
		if h.first && continued[h.file] == h.patient {
			continue
		}
		blocks[h.patient] = append(blocks[h.patient], h.file)
	}
	for p, in := range blocks {
		if len(in) > 1 {
			problems = append(problems, fmt.Sprintf("Patient/%s has %d blocks (in %v) that no continuesInFile joins", p, len(in), slices.Compact(in)))
		}
	}
	sort.Strings(problems)
	return problems
}

func orNone(p string) string {
	if p == "" {
		return "no block header"
	}
	return "the block of Patient/" + p
}

// blockHeader returns the patient a block header references:
// {"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":"Patient/<id>"}}]}.
func blockHeader(line []byte) (string, error) {
	var p struct {
		Parameter []struct {
			Name           string `json:"name"`
			ValueReference *struct {
				Reference string `json:"reference"`
			} `json:"valueReference"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(line, &p); err != nil {
		return "", fmt.Errorf("a Parameters resource that is not valid JSON: %w", err)
	}
	for _, q := range p.Parameter {
		if q.Name != "header" || q.ValueReference == nil {
			continue
		}
		id, ok := fhir.PatientID(q.ValueReference.Reference)
		if !ok {
			return "", fmt.Errorf("a block header references %q, not a Patient", q.ValueReference.Reference)
		}
		return id, nil
	}
	return "", fmt.Errorf("a Parameters resource without a header parameter referencing a Patient")
}

// urlKey identifies a file URL without its query: signed links to one file
// differ in their expiry and signature.
func urlKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// CountMatches reports whether a manifest item's count fits a file of lines
// lines, headers of them block headers (organized output). The IG counts
// "resources"; SMART's reference server and bulk-data-client leave block
// headers out, as bulkfhir does, and a server that counts every line is
// accepted too.
func CountMatches(count, lines, headers int64) bool {
	return count == lines-headers || count == lines
}

// completeBlocks reports whether a file of blocks already in the sink, of
// lines lines, is whole: its count may leave the block headers out, so they
// are counted too (only for --resume, which otherwise downloads it again).
func (c *Client) completeBlocks(ctx context.Context, j job, lines int64) bool {
	if j.kind != "output" || j.entry.Type != "" || j.entry.Count == nil {
		return false
	}
	r, err := c.sink.Open(ctx, j.name)
	if err != nil {
		return false
	}
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 512<<20)
	var headers int64
	for sc.Scan() {
		if h, ok := fhir.Peek(bytes.TrimSpace(sc.Bytes())); ok && h.ResourceType == "Parameters" {
			headers++
		}
	}
	return sc.Err() == nil && CountMatches(*j.entry.Count, lines, headers)
}
