package typefiltertest

import (
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
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
			var got []string
			for _, line := range exporttest.ReadType(t, src, q, tc.Type) {
				got = append(got, gjson.GetBytes(line, "id").Str)
			}
			want := slices.Clone(tc.Want)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s?%s: source returned %v, want %v", tc.Type, strings.Join(tc.Queries, " OR "), got, want)
			}
		})
	}
}
