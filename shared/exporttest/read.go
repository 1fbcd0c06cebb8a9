package exporttest

import (
	"context"
	"sort"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// ReadType reads every segment of typ through src from its start, as the
// export steps would, and returns the lines (skipping bad records).
func ReadType(t testing.TB, src export.Source, q export.Query, typ string) [][]byte {
	t.Helper()
	ctx := context.Background()
	segs, err := src.Plan(ctx, q, typ)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, seg := range segs {
		r, err := src.Open(ctx, q, typ, seg, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := export.EachResource(r, func(line []byte) bool {
			out = append(out, append([]byte(nil), line...))
			return true
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// ReadAllTypes reads every type of q through src and returns the lines,
// sorted.
func ReadAllTypes(t testing.TB, src export.Source, q export.Query) []string {
	t.Helper()
	types, err := src.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, typ := range types {
		for _, line := range ReadType(t, src, q, typ) {
			out = append(out, string(line))
		}
	}
	sort.Strings(out)
	return out
}
