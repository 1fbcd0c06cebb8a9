package export

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Output organized by Patient (organizeOutputBy=Patient, STU3 N-03).
//
// A blocks unit is one patient batch across every type of the export. It
// reads each type for the batch (Patient first) through the same Source
// and filters as a type unit, chunk after chunk from a cursor, and stores
// the resources it keeps as spill part objects beside the job's files.
// The chunk that reads the last type chains the parts per patient in a
// temporary file and writes the patients' blocks in id order: a
// Parameters header referencing the Patient, the Patient (when exported),
// then the patient's compartment resources. So memory holds one offset per
// patient of the batch and the offsets of one patient's resources, never
// the export. A resource in the compartments of several selected patients
// goes into the block of the first of them (by id), once, as the batches
// decide for type units.

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

// blocksPos is where a blocks unit's read resumes (Cursor.Source, JSON):
// segment Seg of type number Type, at source position Src, with Parts
// spill objects stored so far.
type blocksPos struct {
	Type  int    `json:"t"`
	Seg   int    `json:"s"`
	Src   string `json:"c,omitempty"`
	Parts int    `json:"p"`
}

// spillKey is the FileStore object of a blocks unit's n-th spill part:
// records of [patient index: uint32][length: uint32][line].
func spillKey(jobID, unitID string, n int) string {
	return fmt.Sprintf("%s/%s/spill.%06d.bin", jobID, unitID, n)
}

// exportBlocks is ExportChunk for a blocks unit. Reading the batch's types
// resumes from a cursor, chunk after chunk, like a type unit: each chunk
// stores what it kept as a spill part object. The chunk that reads the
// last type then chains the parts per patient in a temporary file and
// writes the blocks (that step is not split: the blocks are only known
// once every type is read, and it reads its own parts, not the source).
func (s *Steps) exportBlocks(ctx context.Context, job *Job, in ChunkInput) (*ChunkResult, error) {
	var batch []string
	if err := s.getJSON(ctx, in.Unit.Batch, &batch); err != nil {
		return nil, retryable(err, "export chunk %s: read patient batch", in.Unit.ID)
	}
	cur, err := s.cursorIn(ctx, in)
	if err != nil {
		return nil, err
	}
	var pos blocksPos
	if cur.Source != "" {
		if err := json.Unmarshal([]byte(cur.Source), &pos); err != nil {
			return nil, fmt.Errorf("export chunk %s: bad cursor: %w", in.Unit.ID, err)
		}
	}
	var types []string
	if job.Plan != nil {
		types = blockTypes(job.Plan.Types)
	}
	done, badRecords, err := s.readBlocks(ctx, job, in.Unit, batch, types, &pos)
	if err != nil {
		return nil, err
	}
	if len(badRecords) > 0 {
		// One error file per chunk, keyed by where the chunk started.
		if err := s.writeOutcomes(ctx, job.ID, in.Unit.ID, 0, cur.Source, badRecords); err != nil {
			return nil, retryable(err, "export chunk %s: write errors", in.Unit.ID)
		}
	}
	if done {
		if err := s.writeBlocks(ctx, job, in.Unit, batch, pos.Parts, &cur); err != nil {
			return nil, err
		}
		cur.Source = ""
	} else {
		b, _ := json.Marshal(pos)
		cur.Source = string(b)
		if err := s.cursorOut(ctx, job.ID, in.Unit.ID, &cur); err != nil {
			return nil, err
		}
	}
	prog := UnitProgress{Resources: cur.Resources, Bytes: cur.Bytes, Files: cur.Files, Done: done, Cursor: &cur}
	if err := s.jobs.SaveProgress(ctx, job.ID, in.Unit.ID, prog); err != nil {
		return nil, retryable(err, "export chunk %s: save progress", in.Unit.ID)
	}
	return &ChunkResult{JobID: job.ID, Unit: in.Unit, Cursor: &cur, Done: done}, nil
}

// readBlocks reads the batch's types from pos until they end (true) or
// the chunk's time is up, storing the kept resources as one spill part.
func (s *Steps) readBlocks(ctx context.Context, job *Job, unit Unit, batch, types []string, pos *blocksPos) (bool, []fhir.Issue, error) {
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
	part := &spillPart{steps: s, ctx: ctx, key: spillKey(job.ID, unit.ID, pos.Parts)}
	defer part.abort()
	budgetAt, hardAt := s.stopTimes(ctx)
	readCtx := ctx
	if stopAt := earliest(budgetAt, hardAt); !stopAt.IsZero() {
		readCtx = WithStopTime(ctx, stopAt)
	}
	var bad []fhir.Issue
	lines := 0 // read by this chunk: the clock is read every 512
	for ; pos.Type < len(types); pos.Type, pos.Seg, pos.Src = pos.Type+1, 0, "" {
		t := types[pos.Type]
		q := s.query(job, t)
		q.Level, q.Patients = bulkdata.LevelPatient, batch
		segs, err := s.source.Plan(ctx, q, t)
		if err != nil {
			return false, nil, retryable(err, "export chunk %s: plan %s", unit.ID, t)
		}
		targets := provenanceTargets(job, Unit{Type: t})
		for ; pos.Seg < len(segs); pos.Seg, pos.Src = pos.Seg+1, "" {
			rd, err := s.source.Open(readCtx, q, t, segs[pos.Seg], pos.Src)
			var changed *SourceChangedError
			if errors.As(err, &changed) {
				bad = append(bad, changed.issue(t))
				continue
			}
			if err != nil {
				return false, nil, retryable(err, "export chunk %s: open %s", unit.ID, t)
			}
			ended, err := s.spillSegment(ctx, rd, t, index, owner, targets, selector, part, pos, &bad, &lines, budgetAt, hardAt)
			rd.Close()
			if errors.As(err, &changed) {
				bad = append(bad, changed.issue(t))
				continue
			}
			if err != nil {
				return false, nil, fmt.Errorf("export chunk %s: %w", unit.ID, err)
			}
			if !ended {
				// Out of time: keep what was read, go on from pos next chunk.
				if err := part.commit(pos); err != nil {
					return false, nil, err
				}
				return false, bad, nil
			}
		}
	}
	if err := part.commit(pos); err != nil {
		return false, nil, err
	}
	return true, bad, nil
}

// spillPart streams one chunk's kept resources into a spill object.
type spillPart struct {
	steps *Steps
	ctx   context.Context
	key   string
	w     FileWriter
	bw    *bufio.Writer
}

func (p *spillPart) add(patient int, line []byte) error {
	if p.w == nil {
		w, err := p.steps.files.Create(p.ctx, p.key)
		if err != nil {
			return retryable(err, "create %s", p.key)
		}
		p.w, p.bw = w, bufio.NewWriterSize(w, 1<<20)
	}
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[:4], uint32(patient))
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(line)))
	if _, err := p.bw.Write(hdr[:]); err != nil {
		return retryable(err, "write %s", p.key)
	}
	if _, err := p.bw.Write(line); err != nil {
		return retryable(err, "write %s", p.key)
	}
	return nil
}

// commit stores the part, if anything was kept, and counts it in pos.
func (p *spillPart) commit(pos *blocksPos) error {
	if p.w == nil {
		return nil
	}
	w := p.w
	p.w = nil
	if err := p.bw.Flush(); err != nil {
		_ = w.Abort()
		return retryable(err, "write %s", p.key)
	}
	if err := w.Commit(); err != nil {
		return retryable(err, "commit %s", p.key)
	}
	pos.Parts++
	return nil
}

func (p *spillPart) abort() {
	if p.w != nil {
		_ = p.w.Abort()
		p.w = nil
	}
}

// writeBlocks chains the unit's spill parts per patient in a temporary
// file and writes the blocks into rolling output files.
func (s *Steps) writeBlocks(ctx context.Context, job *Job, unit Unit, batch []string, parts int, cur *Cursor) error {
	sp, err := newSpill(len(batch))
	if err != nil {
		return retryable(err, "export chunk %s: create spill file", unit.ID)
	}
	defer sp.close()
	for n := 0; n < parts; n++ {
		if err := s.readPart(ctx, spillKey(job.ID, unit.ID, n), len(batch), sp); err != nil {
			return retryable(err, "export chunk %s: read spill part %d", unit.ID, n)
		}
	}
	if err := sp.w.Flush(); err != nil {
		return retryable(err, "export chunk %s: write spill file", unit.ID)
	}
	maxBytes, _ := s.fileLimits(job.Request)
	w := &chunkWriter{steps: s, ctx: ctx, job: job, unit: unit, cur: cur, maxBytes: maxBytes}
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
				return err
			}
		}
		if err := w.writeBlockLine(header, nil); err != nil {
			return err
		}
		w.headers++
		if err := sp.lines(i, func(line []byte) error { return w.writeBlockLine(line, header) }); err != nil {
			return retryable(err, "export chunk %s: write blocks", unit.ID)
		}
	}
	return w.commit()
}

// readPart adds the records of one spill part to the chained spill.
func (s *Steps) readPart(ctx context.Context, key string, patients int, sp *spill) error {
	r, err := s.files.Open(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	var hdr [8]byte
	var line []byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		patient, n := int(binary.LittleEndian.Uint32(hdr[:4])), int(binary.LittleEndian.Uint32(hdr[4:]))
		if patient >= patients {
			return fmt.Errorf("%s: patient %d of a batch of %d", key, patient, patients)
		}
		if cap(line) < n {
			line = make([]byte, n)
		}
		line = line[:n]
		if _, err := io.ReadFull(br, line); err != nil {
			return err
		}
		if err := sp.add(patient, line); err != nil {
			return err
		}
	}
}

// spillSegment reads one segment of type t into the chunk's spill part,
// each resource under the first patient of the batch whose compartment
// holds it, and advances pos.Src. Resources in no batch patient's
// compartment are never kept, whatever the source returned. It reports
// false when the chunk's time ran out before the segment ended.
func (s *Steps) spillSegment(ctx context.Context, rd Reader, t string, index map[string]int, owner *batchOwner,
	targets map[string]bool, selector *fhir.ElementSelector, part *spillPart, pos *blocksPos, bad *[]fhir.Issue,
	lines *int, budgetAt, hardAt time.Time) (bool, error) {
	for {
		if *lines > 0 && *lines%512 == 0 {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			now := s.now()
			if (!hardAt.IsZero() && now.After(hardAt)) || (!budgetAt.IsZero() && now.After(budgetAt)) {
				return false, nil
			}
		}
		line, err := rd.Next()
		if err == io.EOF {
			return true, nil
		}
		var br *BadRecordError
		if errors.As(err, &br) {
			is := fhir.Issue{Severity: fhir.SeverityError, Code: fhir.CodeProcessing,
				Diagnostics: fmt.Sprintf("%s resource at %s was not exported: %s", t, br.Position, br.Reason)}
			if br.Warning {
				is.Severity, is.Diagnostics = fhir.SeverityWarning, fmt.Sprintf("%s at %s: %s", t, br.Position, br.Reason)
			}
			*bad = append(*bad, is)
			pos.Src = rd.Cursor()
			continue
		}
		if errors.Is(err, ErrOutOfTime) && ctx.Err() == nil {
			return false, nil // a throttled upstream: go on from pos next chunk
		}
		if err != nil {
			return false, err
		}
		*lines++
		keep, err := s.blockOf(ctx, t, line, index, owner, targets)
		if err != nil {
			return false, err
		}
		if keep >= 0 {
			if selector != nil {
				if line, err = selector.Subset(t, line); err != nil {
					return false, err
				}
			}
			if err := part.add(keep, line); err != nil {
				return false, err
			}
		}
		pos.Src = rd.Cursor()
	}
}

// blockOf is the index in the batch of the patient whose block a resource
// goes into, or -1 when it is not exported here.
func (s *Steps) blockOf(ctx context.Context, t string, line []byte, index map[string]int, owner *batchOwner, targets map[string]bool) (int, error) {
	if targets != nil && !fhir.TargetsAnyType(line, targets) {
		return -1, nil
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
		return -1, nil
	}
	if owner != nil {
		mine, err := owner.owns(ctx, t, line)
		if err != nil {
			return -1, retryable(err, "read the batch index")
		}
		if !mine {
			return -1, nil
		}
	}
	return patient, nil
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
		c.headers++
	}
	// A resource larger than a file goes after the header all the same.
	return c.put(line)
}
