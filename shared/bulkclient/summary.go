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
	RequiresAccessToken bool
	Wall                time.Duration
	Types               map[string]*TypeTotals // output files by type
	Errors              []issue
	ErrorFiles          int
	DeletedFiles        int
	Resources, Bytes    int64
	Files, Skipped      int
}

// TypeTotals sums one type's output files.
type TypeTotals struct {
	Files            int
	Resources, Bytes int64
}

func (s *Summary) add(r fileResult) {
	if s.Types == nil {
		s.Types = map[string]*TypeTotals{}
	}
	s.Files++
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
			groups[fmt.Sprintf("%s %s: %s", is.severity, is.code, is.diagnostics)]++
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
