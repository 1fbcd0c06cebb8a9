package exporttest

import (
	"strings"
	"testing"
)

// ComparePages is the oracle of paged manifests (N-04) over the pages a
// client walked, each a list of its file items (as "kind path count", links
// stripped of their signatures): the pages seen while the export ran are
// unchanged at completion, no page holds more than max items, and no item
// is listed twice.
func ComparePages(t testing.TB, running, complete [][]string, max int) {
	t.Helper()
	seen := map[string]bool{}
	for i, p := range complete {
		if len(p) > max {
			t.Errorf("page %d has %d items, more than %d", i, len(p), max)
		}
		if i < len(running) && strings.Join(p, "|") != strings.Join(running[i], "|") {
			t.Errorf("page %d changed at completion:\n%v\n%v", i, running[i], p)
		}
		for _, f := range p {
			if seen[f] {
				t.Errorf("%s listed twice", f)
			}
			seen[f] = true
		}
	}
	if len(complete) < len(running) {
		t.Errorf("%d pages at completion, fewer than the %d seen while running", len(complete), len(running))
	}
}
