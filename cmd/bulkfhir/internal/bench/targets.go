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
