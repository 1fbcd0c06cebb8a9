package export

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Output organized by Patient (organizeOutputBy=Patient, STU3 N-03).
//
// A blocks unit is one patient batch across every type of the export. It
// reads each type for the batch (Patient first) through the same Source
// and filters as a type unit, and spills every resource it keeps to a
// temporary file, chained per patient. Then it writes the patients'
// blocks in id order: a Parameters header referencing the Patient, the
// Patient (when exported), then the patient's compartment resources. So
// memory holds one offset per patient of the batch and the offsets of one
// patient's resources, never the export. A resource in the compartments
// of several selected patients goes into the block of the first of them
// (by id), once, as the batches decide for type units.

// blocksGroup is the unit group of an organized export.
const blocksGroup = "blocks"

// BlockHeader is the header line of a patient's resource block.
func BlockHeader(patientID string) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":"Patient/%s"}}]}`, patientID)
}

// blockTypes orders the types of an organized export: Patient first (the
// resource that follows each header), then the others sorted.
func blockTypes(types []string) []string {
	out := make([]string, 0, len(types))
	if slices.Contains(types, "Patient") {
		out = append(out, "Patient")
	}
	for _, t := range types {
		if t != "Patient" {
			out = append(out, t)
		}
	}
	return out
}

// spill is the temporary file of a blocks unit: records of
// [previous record of the patient: int64][length: uint32][line].
type spill struct {
	f    *os.File
	w    *bufio.Writer
	off  int64
	last []int64 // per patient of the batch: its last record, -1 for none
	size []int64 // per patient: bytes of its lines
}

func newSpill(patients int) (*spill, error) {
	f, err := os.CreateTemp("", "bulkfhir-blocks-*")
	if err != nil {
		return nil, err
	}
	sp := &spill{f: f, w: bufio.NewWriterSize(f, 1<<20), last: make([]int64, patients), size: make([]int64, patients)}
	for i := range sp.last {
		sp.last[i] = -1
	}
	return sp, nil
}

func (sp *spill) close() {
	name := sp.f.Name()
	sp.f.Close()
	os.Remove(name)
}

func (sp *spill) add(patient int, line []byte) error {
	var hdr [12]byte
	binary.LittleEndian.PutUint64(hdr[:8], uint64(sp.last[patient]))
	binary.LittleEndian.PutUint32(hdr[8:], uint32(len(line)))
	if _, err := sp.w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := sp.w.Write(line); err != nil {
		return err
	}
	sp.last[patient] = sp.off
	sp.size[patient] += int64(len(line)) + 1
	sp.off += int64(len(hdr)) + int64(len(line))
	return nil
}

// lines returns the patient's records in the order they were added.
func (sp *spill) lines(patient int, fn func(line []byte) error) error {
	var offs []int64
	for o := sp.last[patient]; o >= 0; {
		offs = append(offs, o)
		var hdr [8]byte
		if _, err := sp.f.ReadAt(hdr[:], o); err != nil {
			return err
		}
		o = int64(binary.LittleEndian.Uint64(hdr[:]))
	}
	var buf []byte
	for i := len(offs) - 1; i >= 0; i-- {
		var hdr [12]byte
		if _, err := sp.f.ReadAt(hdr[:], offs[i]); err != nil {
			return err
		}
		n := int(binary.LittleEndian.Uint32(hdr[8:]))
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := sp.f.ReadAt(buf, offs[i]+12); err != nil {
			return err
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
	return nil
}

// exportBlocks is ExportChunk for a blocks unit. It runs the unit in one
// chunk: the blocks of a batch are only known once every type is read.
func (s *Steps) exportBlocks(ctx context.Context, job *Job, in ChunkInput) (*ChunkResult, error) {
	var batch []string
	if err := s.getJSON(ctx, in.Unit.Batch, &batch); err != nil {
		return nil, retryable(err, "export chunk %s: read patient batch", in.Unit.ID)
	}
	index := make(map[string]int, len(batch))
	for i, id := range batch {
		index[id] = i
	}
	var owner *batchOwner
	if job.Plan != nil && job.Plan.Batches > 1 && len(batch) > 0 {
		owner = &batchOwner{steps: s, jobID: job.ID, first: batch[0], batches: map[int]map[string]bool{}}
	}
	var selector *fhir.ElementSelector
	if len(job.Request.Elements) > 0 {
		selector = fhir.NewElementSelector(job.Request.ElementPairs())
	}
	sp, err := newSpill(len(batch))
	if err != nil {
		return nil, retryable(err, "export chunk %s: create spill file", in.Unit.ID)
	}
	defer sp.close()

	var badRecords []fhir.Issue
	var types []string
	if job.Plan != nil {
		types = blockTypes(job.Plan.Types)
	}
	for _, t := range types {
		q := s.query(job, t)
		q.Level, q.Patients = bulkdata.LevelPatient, batch
		segs, err := s.source.Plan(ctx, q, t)
		if err != nil {
			return nil, retryable(err, "export chunk %s: plan %s", in.Unit.ID, t)
		}
		targets := provenanceTargets(job, Unit{Type: t})
		for _, seg := range segs {
			rd, err := s.source.Open(ctx, q, t, seg, "")
			var changed *SourceChangedError
			if errors.As(err, &changed) {
				badRecords = append(badRecords, changed.issue(t))
				continue
			}
			if err != nil {
				return nil, retryable(err, "export chunk %s: open %s", in.Unit.ID, t)
			}
			err = s.spillSegment(ctx, rd, t, index, owner, targets, selector, sp, &badRecords)
			rd.Close()
			if errors.As(err, &changed) {
				badRecords = append(badRecords, changed.issue(t))
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("export chunk %s: %w", in.Unit.ID, err)
			}
		}
	}
	if err := sp.w.Flush(); err != nil {
		return nil, retryable(err, "export chunk %s: write spill file", in.Unit.ID)
	}

	cur := Cursor{}
	maxBytes, _ := s.fileLimits(job.Request)
	w := &chunkWriter{steps: s, ctx: ctx, job: job, unit: in.Unit, cur: &cur, maxBytes: maxBytes}
	defer w.abort()
	for i, id := range batch {
		if sp.last[i] < 0 {
			continue // nothing exported for this patient
		}
		header := BlockHeader(id)
		// A block that fits in a file of its own is not split: it starts
		// a new file when the open one has no room for it (N-03).
		if whole := int64(len(header)) + 1 + sp.size[i]; w.w != nil && w.nbytes > 0 && w.nbytes+whole > maxBytes && whole <= maxBytes {
			if err := w.commit(); err != nil {
				return nil, err
			}
		}
		if err := w.writeBlockLine(header, nil); err != nil {
			return nil, err
		}
		if err := sp.lines(i, func(line []byte) error { return w.writeBlockLine(line, header) }); err != nil {
			return nil, retryable(err, "export chunk %s: write blocks", in.Unit.ID)
		}
	}
	if err := w.commit(); err != nil {
		return nil, err
	}
	if len(badRecords) > 0 {
		if err := s.writeOutcomes(ctx, job.ID, in.Unit.ID, 0, "", badRecords); err != nil {
			return nil, retryable(err, "export chunk %s: write errors", in.Unit.ID)
		}
	}
	prog := UnitProgress{Resources: cur.Resources, Bytes: cur.Bytes, Files: cur.Files, Done: true, Cursor: &cur}
	if err := s.jobs.SaveProgress(ctx, job.ID, in.Unit.ID, prog); err != nil {
		return nil, retryable(err, "export chunk %s: save progress", in.Unit.ID)
	}
	return &ChunkResult{JobID: job.ID, Unit: in.Unit, Cursor: &cur, Done: true}, nil
}

// spillSegment reads one segment of type t into the spill, each resource
// under the first patient of the batch whose compartment holds it.
// Resources in no batch patient's compartment are never kept, whatever
// the source returned.
func (s *Steps) spillSegment(ctx context.Context, rd Reader, t string, index map[string]int, owner *batchOwner,
	targets map[string]bool, selector *fhir.ElementSelector, sp *spill, bad *[]fhir.Issue) error {
	lines := 0
	for {
		if lines%512 == 511 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		line, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		var br *BadRecordError
		if errors.As(err, &br) {
			is := fhir.Issue{Severity: fhir.SeverityError, Code: fhir.CodeProcessing,
				Diagnostics: fmt.Sprintf("%s resource at %s was not exported: %s", t, br.Position, br.Reason)}
			if br.Warning {
				is.Severity, is.Diagnostics = fhir.SeverityWarning, fmt.Sprintf("%s at %s: %s", t, br.Position, br.Reason)
			}
			*bad = append(*bad, is)
			continue
		}
		if err != nil {
			return err
		}
		lines++
		if targets != nil && !fhir.TargetsAnyType(line, targets) {
			continue
		}
		patient := -1
		fhir.CompartmentPatients(t, line, func(id string) bool {
			if i, ok := index[id]; ok && (patient < 0 || i < patient) {
				patient = i
			}
			// A Patient's block is its own, never a linked patient's.
			return t != "Patient"
		})
		if patient < 0 {
			continue
		}
		if owner != nil {
			mine, err := owner.owns(ctx, t, line)
			if err != nil {
				return retryable(err, "read the batch index")
			}
			if !mine {
				continue
			}
		}
		if selector != nil {
			if line, err = selector.Subset(t, line); err != nil {
				return err
			}
		}
		if err := sp.add(patient, line); err != nil {
			return retryable(err, "write spill file")
		}
	}
}

// writeBlockLine writes one line of a resource block. A file that would
// overflow in the middle of a block is committed with continuesInFile set
// to the next file, which starts with the block's header again.
func (c *chunkWriter) writeBlockLine(line, header []byte) error {
	if header == nil {
		return c.writeLine(line) // a block's first line may start a file
	}
	if size := int64(len(line)) + 1; c.w != nil && c.nbytes > 0 && c.nbytes+size > c.maxBytes {
		c.continues = FileKey(c.job.ID, c.unit.ID, blocksGroup, c.cur.Seq+1)
		if err := c.commit(); err != nil {
			return err
		}
		if err := c.put(header); err != nil {
			return err
		}
	}
	// A resource larger than a file goes after the header all the same.
	return c.put(line)
}
