package bench

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

// Target is a figure's goal: a ratio to the baseline at least Min, or a
// share of the source read at most Max (issue 17).
type Target struct {
	// Min is the least ratio to the baseline (0: none).
	Min float64 `json:"minRatio,omitempty"`
	// MaxRead is the largest share of the source's bytes an export may
	// read (0: none).
	MaxRead float64 `json:"maxReadShare,omitempty"`
	// MaxSeconds is the longest the row may take (0: none), Goal how
	// the report states it.
	MaxSeconds float64 `json:"maxSeconds,omitempty"`
	Goal       string  `json:"goal,omitempty"`
}

// verdict says "met" or "missed" for a row with a target, "" without.
func (t Throughput) verdict() string {
	switch {
	case t.Target == nil:
		return ""
	case t.Target.Min > 0 && t.Ratio < t.Target.Min:
		return "missed"
	case t.Target.MaxRead > 0 && (t.SourceBytes <= 0 || float64(t.ReadBytes) >= t.Target.MaxRead*float64(t.SourceBytes)):
		return "missed"
	case t.Target.MaxSeconds > 0 && (t.Seconds <= 0 || t.Seconds > t.Target.MaxSeconds):
		return "missed"
	}
	return "met"
}

// shownVerdict is the verdict with its caveat, if any.
func (t Throughput) shownVerdict() string {
	if t.Verdict == "met" && t.Caveat != "" {
		return "met (" + t.Caveat + ")"
	}
	return t.Verdict
}

// goal renders a row's target.
func (t Throughput) goal() string {
	switch {
	case t.Target == nil:
		return ""
	case t.Target.Goal != "":
		return t.Target.Goal
	case t.Target.MaxRead > 0:
		return fmt.Sprintf("reads < %.0f %% of the source", t.Target.MaxRead*100)
	}
	return fmt.Sprintf("≥ %.0f %%", t.Target.Min*100)
}

// median returns the run with the median MB/s (the lower middle of an
// even count) and the spread of the ratios as "min–max".
func median(runs []Throughput) Throughput {
	s := append([]Throughput(nil), runs...)
	sort.Slice(s, func(i, j int) bool { return s[i].MBPerSec < s[j].MBPerSec })
	m := s[(len(s)-1)/2]
	m.Runs = len(runs)
	if len(runs) > 1 {
		lo, hi := s[0].Ratio, s[0].Ratio
		for _, t := range s {
			lo, hi = min(lo, t.Ratio), max(hi, t.Ratio)
		}
		if hi > 0 {
			m.Spread = fmt.Sprintf("%.0f–%.0f %%", lo*100, hi*100)
		}
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load averages ("" off Linux).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// profileDoc is where what limits each missed target is written down,
// from the profiles behind it.
const profileDoc = "docs/performance-targets.md, \"Where a target is missed, and what the profile shows\""

// missedTargets lists the rows that missed their target, each with its
// figure, and the compression ceiling measured in the same run: the
// reference row (the same copy through the store's compressor), which no
// export that compresses on the same core can pass. "" when none missed.
func (r *Report) missedTargets() string {
	var missed []Throughput
	var ceiling *Throughput
	for i, t := range r.Throughput {
		if t.Verdict == "missed" {
			missed = append(missed, t)
		}
		if ceiling == nil && strings.HasPrefix(t.Name, "reference:") {
			ceiling = &r.Throughput[i]
		}
	}
	if len(missed) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\nMissed targets, and what limits them (the profiles are in " + profileDoc + "):\n")
	for _, t := range missed {
		fig := fmt.Sprintf("%.0f %%", t.Ratio*100)
		if t.Target.MaxSeconds > 0 {
			fig = fmt.Sprintf("%.2f s", t.Seconds)
		}
		fmt.Fprintf(&b, "- %s: %s against %s", t.Name, fig, t.goal())
		if ceiling != nil && ceiling.Ratio > 0 && t.Target.Min > 0 {
			fmt.Fprintf(&b, "; compressing the copy alone reached %.0f %% of the baseline in this run", ceiling.Ratio*100)
			if t.Target.Min > ceiling.Ratio {
				b.WriteString(", below the target, so compression on one core bounds it")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
