package bulkclient

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary is what an export produced.
type Summary struct {
	StatusURL           string
	TransactionTime     string
	Location            string // the folder or s3:// prefix
	RequiresAccessToken bool
	Wall                time.Duration
	Types               map[string]*TypeTotals // output files by type
	Errors              []Issue                // the issues of the error files
	ErrorFiles          int
	DeletedFiles        int
	Resources, Bytes    int64
	Files, Skipped      int
	FileList            []FileInfo
	// Mismatches are files whose line count differs from the manifest's.
	Mismatches []string
	// Unasked are output files of types the request did not ask for; they
	// are not downloaded.
	Unasked     []string
	Attachments int
}

// FileInfo is one downloaded (or kept) file.
type FileInfo struct {
	Name    string `json:"name"`
	Kind    string `json:"kind"` // output, error, deleted
	Type    string `json:"type"`
	Count   int64  `json:"count"`
	Bytes   int64  `json:"bytes"`
	Skipped bool   `json:"kept,omitempty"`
}

// HasErrors reports an export that completed with errors: issues of
// severity error or fatal in its error files, or counts that differ from
// the manifest.
func (s *Summary) HasErrors() bool {
	if len(s.Mismatches) > 0 || len(s.Unasked) > 0 {
		return true
	}
	for _, is := range s.Errors {
		if is.Severity == "error" || is.Severity == "fatal" {
			return true
		}
	}
	return false
}

// JSON is the machine-readable summary (--output json).
func (s *Summary) JSON() map[string]any {
	files := s.FileList
	if files == nil {
		files = []FileInfo{}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
	types := map[string]TypeTotals{}
	for t, tt := range s.Types {
		types[t] = *tt
	}
	errs := s.Errors
	if errs == nil {
		errs = []Issue{}
	}
	mism := s.Mismatches
	if mism == nil {
		mism = []string{}
	}
	status := "complete"
	if s.HasErrors() {
		status = "complete-with-errors"
	}
	return map[string]any{
		"status": status, "statusUrl": s.StatusURL, "transactionTime": s.TransactionTime, "location": s.Location,
		"files": files, "types": types, "resources": s.Resources, "bytes": s.Bytes, "errors": errs,
		"countMismatches": mism, "notAsked": nonNil(s.Unasked), "keptFiles": s.Skipped, "attachments": s.Attachments, "seconds": s.Wall.Seconds(),
	}
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

func fmtMismatch(name string, lines, count int64) string {
	return fmt.Sprintf("%s has %d resources, but the manifest says %d (kept as received)", name, lines, count)
}

// TypeTotals sums one type's output files.
type TypeTotals struct {
	Files     int   `json:"files"`
	Resources int64 `json:"resources"`
	Bytes     int64 `json:"bytes"`
}

func (s *Summary) add(r fileResult) {
	if s.Types == nil {
		s.Types = map[string]*TypeTotals{}
	}
	s.Files++
	s.FileList = append(s.FileList, FileInfo{Name: r.job.name, Kind: r.job.kind, Type: r.job.entry.Type, Count: r.lines, Bytes: r.bytes, Skipped: r.skipped})
	if r.mismatch != "" {
		s.Mismatches = append(s.Mismatches, r.mismatch)
	}
	if r.skipped {
		s.Skipped++
	}
	switch r.job.kind {
	case "output":
		t := s.Types[r.job.entry.Type]
		if t == nil {
			t = &TypeTotals{}
			s.Types[r.job.entry.Type] = t
		}
		t.Files++
		t.Resources += r.lines
		t.Bytes += r.bytes
		s.Resources += r.lines
		s.Bytes += r.bytes
	case "error":
		s.ErrorFiles++
		s.Errors = append(s.Errors, r.issues...)
	case "deleted":
		s.DeletedFiles++
	}
}

// Print writes the summary table, the totals and the grouped error issues.
func (s *Summary) Print(w io.Writer) {
	types := make([]string, 0, len(s.Types))
	for t := range s.Types {
		types = append(types, t)
	}
	sort.Strings(types)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "type\tfiles\tresources\tbytes\t")
	for _, t := range types {
		tt := s.Types[t]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t\n", t, tt.Files, tt.Resources, humanBytes(tt.Bytes))
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%s\t\n", s.Files-s.ErrorFiles-s.DeletedFiles, s.Resources, humanBytes(s.Bytes))
	tw.Flush()
	rate := 0.0
	if s.Wall > 0 {
		rate = float64(s.Resources) / s.Wall.Seconds()
	}
	fmt.Fprintf(w, "%d resources in %s (%.0f resources/s)", s.Resources, s.Wall.Round(time.Millisecond), rate)
	if s.Skipped > 0 {
		fmt.Fprintf(w, "; %d files already complete were kept", s.Skipped)
	}
	fmt.Fprintln(w)
	if len(s.Errors) > 0 {
		groups := map[string]int{}
		for _, is := range s.Errors {
			groups[fmt.Sprintf("%s %s: %s", is.Severity, is.Code, is.Diagnostics)]++
		}
		keys := make([]string, 0, len(groups))
		for k := range groups {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			return groups[keys[i]] > groups[keys[j]] || groups[keys[i]] == groups[keys[j]] && keys[i] < keys[j]
		})
		fmt.Fprintf(w, "%d issues reported by the server in %d error file(s):\n", len(s.Errors), s.ErrorFiles)
		for _, k := range keys {
			fmt.Fprintf(w, "  %5d× %s\n", groups[k], strings.TrimSpace(k))
		}
	}
	for _, m := range s.Mismatches {
		fmt.Fprintf(w, "count mismatch: %s\n", m)
	}
	for _, m := range s.Unasked {
		fmt.Fprintf(w, "not asked for: %s\n", m)
	}
	if s.Attachments > 0 {
		fmt.Fprintf(w, "%d attachments in attachments/\n", s.Attachments)
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
