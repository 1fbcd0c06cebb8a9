package typefiltertest

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

// ByType returns the fixture's lines grouped by resource type, for sources
// that keep one object per type.
func ByType() map[string][]byte {
	out := map[string][]byte{}
	for _, l := range Lines() {
		typ := gjson.GetBytes(l, "resourceType").Str
		out[typ] = append(append(out[typ], l...), '\n')
	}
	return out
}

// RunSource exports every case through src, which must hold the fixture,
// and checks it returns exactly the case's resources.
func RunSource(t *testing.T, src export.Source) {
	t.Helper()
	for _, tc := range Cases {
		t.Run(tc.Name, func(t *testing.T) {
			q := export.Query{Level: bulkdata.LevelSystem, TypeFilters: tc.Queries}
			got := read(t, src, q, tc.Type)
			want := slices.Clone(tc.Want)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s?%s: source returned %v, want %v", tc.Type, strings.Join(tc.Queries, " OR "), got, want)
			}
		})
	}
}

func read(t *testing.T, src export.Source, q export.Query, typ string) []string {
	t.Helper()
	ctx := context.Background()
	segs, err := src.Plan(ctx, q, typ)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, seg := range segs {
		r, err := src.Open(ctx, q, typ, seg, "")
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, err := r.Next()
			if err == io.EOF {
				break
			}
			var bad *export.BadRecordError
			if errors.As(err, &bad) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, gjson.GetBytes(line, "id").Str)
		}
		r.Close()
	}
	return ids
}
