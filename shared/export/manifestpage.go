package export

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Paged manifests (allowPartialManifests, N-04).
//
// A page is the job's files in key order after a cursor (the key of the
// last file of the page before it, "" for the first page): at most
// Config.ManifestPageSize of them, all of one group (the units of one
// type, or of an organized export). A page is a function of its cursor
// and of files that can no longer change, so it never changes once
// returned:
//   - while the job runs, only files below the frontier are listed: the
//     files of units that sort before the first unit not done yet (a unit
//     writes its files under "<job>/<unit>/", and a done unit writes no
//     more);
//   - a page is served while the job runs only when it is full or its
//     group is done; otherwise the page before it has no next link yet
//     (the one change the IG allows a returned manifest).
// Pages map onto the store's pagination (FilePager): a page reads at most
// two pages' worth of file records, however many files the job has.

// FilePager is a JobStore that reads a job's files a page at a time.
type FilePager interface {
	// FilesAfter returns at most limit of the job's files whose keys sort
	// after after, in key order.
	FilesAfter(ctx context.Context, id, after string, limit int) ([]File, error)
}

// ManifestPage is one page of a paged manifest.
type ManifestPage struct {
	Manifest *bulkdata.Manifest
	// Next is the cursor of the next page ("" when there is none yet, or
	// none at all once the job is complete).
	Next string
}

// ErrBadPage is a page cursor the job cannot serve: no paged manifest was
// asked for, or the cursor is malformed.
var ErrBadPage = errors.New("no such manifest page")

// MaxPageCursor bounds the length of a page cursor (a file key's tail).
const MaxPageCursor = 1024

// ValidPageCursor reports whether c can be a page cursor.
func ValidPageCursor(c string) bool {
	if len(c) > MaxPageCursor {
		return false
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x21 || c[i] > 0x7e {
			return false
		}
	}
	return true
}

// page builds the manifest page after cursor for a job that allows partial
// manifests; nil when the job runs and the page is not final yet.
func (s *Service) page(ctx context.Context, job *Job, cursor string, progress map[string]UnitProgress) (*ManifestPage, error) {
	complete := job.Status == StatusCompleted
	var fr frontier
	if !complete {
		var ok bool
		if fr, ok = newFrontier(job, progress); !ok {
			return nil, nil
		}
	}
	prefix := job.ID + "/"
	files, ok, err := s.scanPage(ctx, job, prefix+cursor, complete, fr)
	if err != nil || !ok {
		return nil, err
	}
	m := s.newManifest(job)
	for _, f := range files {
		if err := s.addEntry(ctx, s.files, job, m, f); err != nil {
			return nil, err
		}
	}
	p := &ManifestPage{Manifest: m}
	if len(files) == 0 {
		return p, nil
	}
	last := files[len(files)-1].Key
	next, ok, err := s.scanPage(ctx, job, last, complete, fr)
	if err != nil {
		return nil, err
	}
	if ok && len(next) > 0 {
		p.Next = strings.TrimPrefix(last, prefix)
	}
	return p, nil
}

// scanPage reads the files of the page after key and reports whether it
// may be served now. Files without resources are skipped, as the unpaged
// manifest skips them.
func (s *Service) scanPage(ctx context.Context, job *Job, after string, complete bool, fr frontier) ([]File, bool, error) {
	n := s.cfg.ManifestPageSize
	var out []File
	group := ""
	for {
		batch, err := s.filesAfter(ctx, job.ID, after, n+1)
		if err != nil {
			return nil, false, fmt.Errorf("manifest page of %s: %w", job.ID, err)
		}
		for _, f := range batch {
			if !strings.HasPrefix(f.Key, job.ID+"/") {
				return out, s.pageReady(out, group, complete, fr), nil
			}
			if !complete && !fr.final(f.Key) {
				// Not final yet: the page ends here for now.
				return out, s.pageReady(out, group, complete, fr), nil
			}
			if f.Count == 0 {
				continue
			}
			g := fileGroup(job.ID, f.Key)
			if len(out) > 0 && g != group {
				return out, true, nil // the group ended before the page filled
			}
			group = g
			out = append(out, f)
			if len(out) == n {
				return out, true, nil
			}
		}
		if len(batch) < n+1 {
			return out, s.pageReady(out, group, complete, fr), nil
		}
		after = batch[len(batch)-1].Key
	}
}

// pageReady reports whether a page that stopped short of full may be
// served: always once the job is complete; while it runs, when its group
// can write no more files and nothing unfinished sorts inside it.
func (s *Service) pageReady(out []File, group string, complete bool, fr frontier) bool {
	if complete {
		return true
	}
	if len(out) == 0 {
		return false
	}
	return fr.groupDone(group)
}

// fileGroup is the group of a file key "<job>/<unit>/…": the unit id up
// to its first dot ("Patient" for "Patient.0003", "request" for the
// kick-off's warnings).
func fileGroup(jobID, key string) string {
	rest := strings.TrimPrefix(key, jobID+"/")
	unit, _, _ := strings.Cut(rest, "/")
	g, _, _ := strings.Cut(unit, ".")
	return g
}

// frontier is what a running job has finished: files sorting before
// limit are final, and the groups in done are complete.
type frontier struct {
	limit string // "" when every unit is done
	open  map[string]bool
}

// newFrontier computes the frontier from the plan's unit groups and the
// units' progress; false when the plan does not name its units (not
// planned yet, or planned before groups were recorded).
func newFrontier(job *Job, progress map[string]UnitProgress) (frontier, bool) {
	if job.Plan == nil || (len(job.Plan.Groups) == 0 && job.Plan.Units > 0) {
		return frontier{}, false
	}
	fr := frontier{open: map[string]bool{}}
	first := ""
	for _, id := range job.Plan.UnitIDs() {
		if progress[id].Done {
			continue
		}
		g, _, _ := strings.Cut(id, ".")
		fr.open[g] = true
		if first == "" || id < first {
			first = id
		}
	}
	if first != "" {
		fr.limit = job.ID + "/" + first + "/"
	}
	return fr, true
}

// final reports whether no file can be written any more at or before key.
func (f frontier) final(key string) bool { return f.limit == "" || key < f.limit }

// groupDone reports whether every unit of the group is done.
func (f frontier) groupDone(g string) bool { return !f.open[g] }

// filesAfter reads files in key order through the store's pagination, or
// from the whole list when the store cannot page.
func (s *Service) filesAfter(ctx context.Context, id, after string, limit int) ([]File, error) {
	if p, ok := s.jobs.(FilePager); ok {
		return p.FilesAfter(ctx, id, after, limit)
	}
	all, err := s.jobs.Files(ctx, id)
	if err != nil {
		return nil, err
	}
	return FilesAfter(all, after, limit), nil
}

// FilesAfter is FilePager over a whole list of files (for stores and fakes
// that hold them in memory).
func FilesAfter(all []File, after string, limit int) []File {
	all = slices.Clone(all)
	slices.SortFunc(all, func(a, b File) int { return strings.Compare(a.Key, b.Key) })
	i, _ := slices.BinarySearchFunc(all, after, func(f File, k string) int { return strings.Compare(f.Key, k) })
	for i < len(all) && all[i].Key <= after {
		i++
	}
	all = all[i:]
	if len(all) > limit {
		all = all[:limit]
	}
	return all
}

// newManifest is a manifest with the job's fields and no files.
func (s *Service) newManifest(job *Job) *bulkdata.Manifest {
	return &bulkdata.Manifest{
		TransactionTime:     fhir.FormatInstant(job.TransactionTime),
		Request:             job.RequestURL,
		RequiresAccessToken: s.cfg.RequiresAccessToken,
		OutputOrganizedBy:   job.Request.OrganizeOutputBy,
		Output:              []bulkdata.ManifestFile{},
		Deleted:             []bulkdata.ManifestFile{},
		Error:               []bulkdata.ManifestFile{},
	}
}

// addEntry links file f (with links) into the manifest array of its kind
// (files without resources are left out).
func (s *Service) addEntry(ctx context.Context, links Linker, job *Job, m *bulkdata.Manifest, f File) error {
	if f.Count == 0 {
		return nil
	}
	url, err := links.URL(ctx, f.Key, job.ExpiresAt)
	if err != nil {
		return fmt.Errorf("manifest: link %s: %w", f.Key, err)
	}
	count, size := f.Count, f.Bytes
	entry := bulkdata.ManifestFile{Type: f.Type, URL: url, Count: &count, FileSize: &size}
	if f.Continues != "" {
		if entry.ContinuesInFile, err = links.URL(ctx, f.Continues, job.ExpiresAt); err != nil {
			return fmt.Errorf("manifest: link %s: %w", f.Continues, err)
		}
	}
	switch f.Kind {
	case KindOutput:
		if job.Request.OrganizeOutputBy != "" {
			entry.Type = "" // M-12: no type on organized output items
		}
		m.Output = append(m.Output, entry)
	case KindError:
		m.Error = append(m.Error, entry)
	case KindDeleted:
		m.Deleted = append(m.Deleted, entry)
	}
	return nil
}
