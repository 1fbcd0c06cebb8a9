package bench

import (
	"strings"
	"testing"
)

func TestVerdicts(t *testing.T) {
	for _, c := range []struct {
		name string
		row  Throughput
		want string
	}{
		{"no target", Throughput{Ratio: 0.1}, ""},
		{"ratio met", Throughput{Ratio: 0.5, Target: &Target{Min: 0.5}}, "met"},
		{"ratio missed", Throughput{Ratio: 0.49, Target: &Target{Min: 0.5}}, "missed"},
		{"read met", Throughput{ReadBytes: 9, SourceBytes: 1000, Target: &Target{MaxRead: 0.01}}, "met"},
		{"read missed", Throughput{ReadBytes: 10, SourceBytes: 1000, Target: &Target{MaxRead: 0.01}}, "missed"},
		{"read unmeasured", Throughput{Target: &Target{MaxRead: 0.01}}, "missed"},
		{"time met", Throughput{Seconds: 2.4, Target: &Target{MaxSeconds: 2.5}}, "met"},
		{"time missed", Throughput{Seconds: 2.6, Target: &Target{MaxSeconds: 2.5}}, "missed"},
		{"time unmeasured", Throughput{Target: &Target{MaxSeconds: 2.5}}, "missed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.row.verdict(); got != c.want {
				t.Errorf("verdict = %q, want %q", got, c.want)
			}
		})
	}
}

// TestCaveat: a met verdict the run cannot vouch for shows its caveat; a
// missed one stays as it is.
func TestCaveat(t *testing.T) {
	met := Throughput{Ratio: 0.6, Target: &Target{Min: 0.5}, Caveat: "baseline disk-bound"}
	met.Verdict = met.verdict()
	missed := Throughput{Ratio: 0.4, Target: &Target{Min: 0.5}, Caveat: "baseline disk-bound"}
	missed.Verdict = missed.verdict()
	if got := met.shownVerdict(); got != "met (baseline disk-bound)" {
		t.Errorf("met with a caveat shows %q", got)
	}
	if got := missed.shownVerdict(); got != "missed" {
		t.Errorf("missed with a caveat shows %q", got)
	}
	md := (&Report{Throughput: []Throughput{met}}).Markdown()
	if !strings.Contains(md, "| met (baseline disk-bound) |") {
		t.Errorf("report lacks the caveat:\n%s", md)
	}
}

func TestMedianAndReport(t *testing.T) {
	runs := []Throughput{{MBPerSec: 30, Ratio: 0.3}, {MBPerSec: 10, Ratio: 0.1}, {MBPerSec: 20, Ratio: 0.6}}
	m := median(runs)
	if m.MBPerSec != 20 || m.Runs != 3 || m.Spread != "10–60 %" {
		t.Errorf("median = %+v", m)
	}
	if r := medianRatio(runs); r != 0.3 {
		t.Errorf("median ratio = %v, want 0.3", r)
	}
	m.Ratio, m.Target, m.Name = 0.3, &Target{Min: 0.5}, "engine: x"
	m.Verdict = m.verdict()
	md := (&Report{Throughput: []Throughput{m}, LoadStart: "1.00 2.00 3.00", LoadEnd: "4.00 5.00 6.00"}).Markdown()
	for _, want := range []string{"| ≥ 50 % | missed |", "median of 3 runs (ratios 10–60 %)", "at the start: 1.00 2.00 3.00; at the end: 4.00 5.00 6.00"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestMissedTargetsAreExplained: a report with a missed target lists it
// with the compression ceiling of the same run; one with every target met
// has no such list.
func TestMissedTargetsAreExplained(t *testing.T) {
	ref := Throughput{Name: "reference: raw copy, compressed", Ratio: 0.41}
	miss := Throughput{Name: "engine: system, unfiltered", Ratio: 0.31, Target: &Target{Min: 0.5}}
	met := Throughput{Name: "engine: Group", Ratio: 0.35, Target: &Target{Min: 0.3}}
	for _, c := range []struct {
		name  string
		rows  []Throughput
		wants []string
		none  bool
	}{
		{"missed, below the ceiling", []Throughput{ref, miss, met}, []string{
			"Missed targets", "- engine: system, unfiltered: 31 % against ≥ 50 %",
			"reached 41 % of the baseline in this run, below the target, so compression on one core bounds it",
		}, false},
		{"all met", []Throughput{ref, met}, nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := &Report{Throughput: c.rows}
			for i := range rep.Throughput {
				rep.Throughput[i].Verdict = rep.Throughput[i].verdict()
			}
			md := rep.Markdown()
			if c.none && strings.Contains(md, "Missed targets") {
				t.Errorf("a report with every target met lists missed ones:\n%s", md)
			}
			for _, w := range c.wants {
				if !strings.Contains(md, w) {
					t.Errorf("report lacks %q:\n%s", w, md)
				}
			}
			if strings.Contains(md, "engine: Group: ") {
				t.Errorf("a met target is listed as missed:\n%s", md)
			}
		})
	}
}
