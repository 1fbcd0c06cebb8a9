package fhirsource

import (
	"context"
	"encoding/json"
	"hash/fnv"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// exportCase is one export and the resources it must return.
type exportCase struct {
	name  string
	q     export.Query
	types []string
	want  map[string][]byte
	// keysOnly compares which resources came, not their content (an
	// upstream that applies _elements subsets them).
	keysOnly bool
}

// exportCases are the exports of the Done-when list: system, _since,
// Group (with and without patient), Patient (with and without patient),
// _typeFilter and _elements.
func exportCases(t *testing.T, until time.Time) []exportCase {
	d := sample(t)
	since := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	members := exporttest.GroupMembers(t, d.src, "care-team-a")
	cohort := exporttest.GroupMembers(t, d.src, "small-cohort")
	var two []string
	for _, p := range sortedKeys(cohort) {
		if len(two) < 2 {
			two = append(two, p)
		}
	}
	twoSet := map[string]bool{two[0]: true, two[1]: true}
	clinical := []string{"Patient", "Observation", "Condition", "Encounter", "Immunization", "AllergyIntolerance"}
	return []exportCase{
		{name: "system", q: export.Query{Level: bulkdata.LevelSystem, Until: &until},
			types: []string{"Patient", "Observation", "Practitioner"},
			want:  ofTypes(d.src, "Patient", "Observation", "Practitioner")},
		{name: "since", q: export.Query{Level: bulkdata.LevelSystem, Since: &since, Until: &until},
			types: []string{"Observation", "Condition"},
			want: where(ofTypes(d.src, "Observation", "Condition"), func(l []byte) bool {
				lu, _ := fhir.ParseLastUpdated(gjson.GetBytes(l, "meta.lastUpdated").Str)
				return lu.After(since)
			})},
		{name: "group", q: export.Query{Level: bulkdata.LevelGroup, GroupID: "care-team-a", Until: &until},
			types: clinical, want: ofTypes(exporttest.ExpectedCompartment(d.src, members), clinical...)},
		{name: "group with patient", q: export.Query{Level: bulkdata.LevelGroup, GroupID: "small-cohort", Patients: two, Until: &until},
			types: clinical, want: ofTypes(exporttest.ExpectedCompartment(d.src, twoSet), clinical...)},
		{name: "patient list", q: export.Query{Level: bulkdata.LevelPatient, Patients: two, Until: &until},
			types: clinical, want: ofTypes(exporttest.ExpectedCompartment(d.src, twoSet), clinical...)},
		{name: "all patients", q: export.Query{Level: bulkdata.LevelPatient, Until: &until},
			types: []string{"Patient", "Observation"}, want: ofTypes(d.src, "Patient", "Observation")},
		{name: "typeFilter", q: export.Query{Level: bulkdata.LevelSystem, Until: &until,
			TypeFilters: []string{"category=laboratory", "category=vital-signs&status=final"}},
			types: []string{"Observation"},
			want: where(ofTypes(d.src, "Observation"), func(l []byte) bool {
				c := gjson.GetBytes(l, "category.0.coding.0.code").Str
				return c == "laboratory" || c == "vital-signs"
			})},
		{name: "elements", q: export.Query{Level: bulkdata.LevelSystem, Until: &until, Elements: []string{"gender"}},
			types: []string{"Patient"}, want: ofTypes(d.src, "Patient"), keysOnly: true},
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// changes updates about 10 % and deletes about 5 % of the resources of a
// type on the upstream (chosen by a hash of the id, so the same each run),
// stamped now: after the export's upper bound.
type changes struct {
	fs      *fhirtest.Server
	src     map[string][]byte
	updated map[string][]byte // key → the new form
	deleted map[string]bool
}

func (c *changes) change(t *testing.T, typ string) {
	t.Helper()
	now := time.Now().UTC()
	for key, line := range c.src {
		ktyp, id, _ := strings.Cut(key, "/")
		if ktyp != typ || typ == "Group" {
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(key))
		switch r := h.Sum32() % 100; {
		case r < 10:
			var m map[string]any
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			m["meta"] = map[string]any{"lastUpdated": fhir.FormatInstant(now), "versionId": "2"}
			b, _ := json.Marshal(m)
			if err := c.fs.Add(b); err != nil {
				t.Fatal(err)
			}
			c.updated[key] = b
		case r < 15:
			c.fs.Delete(typ, id, now)
			c.deleted[key] = true
		}
	}
}

// checkChanging is the oracle under changes: a resource unchanged
// throughout is there exactly once (readType fails on a repeat) and equal
// to the source; an updated one at most once, in its old or new form; a
// deleted one at most once, in its old form; nothing else.
func (c *changes) check(t *testing.T, got, want map[string][]byte, keysOnly bool) {
	t.Helper()
	missing := 0
	for key, w := range want {
		g, ok := got[key]
		nw, upd := c.updated[key]
		switch {
		case !ok && (upd || c.deleted[key]):
		case !ok:
			if missing++; missing <= 5 {
				t.Errorf("missing %s, which did not change", key)
			}
		case keysOnly:
		case exporttest.JSONEqual(t, g, w):
		case upd && exporttest.JSONEqual(t, g, nw):
		default:
			t.Errorf("%s differs from the source", key)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected %s", key)
		}
	}
	if missing > 0 {
		t.Errorf("%d unchanged resources missing of %d", missing, len(want))
	}
}

// TestExportsAgainstEveryProfile runs every export against every fhirtest
// profile, read in chunks of 23 resources resumed from their cursors, with
// the upstream still and with 10 % of each type updated and 5 % deleted
// after the type's first chunk.
func TestExportsAgainstEveryProfile(t *testing.T) {
	for name, opts := range fhirtest.Profiles() {
		for _, changing := range []bool{false, true} {
			t.Run(name+"/changing="+map[bool]string{false: "no", true: "yes"}[changing], func(t *testing.T) {
				t.Parallel()
				for _, tc := range exportCases(t, time.Time{}) {
					fs := fhirtest.New(opts)
					if err := fs.LoadDir(sample(t).dir); err != nil {
						t.Fatal(err)
					}
					hs := httptest.NewServer(fs)
					// Pages of 20, chunks of 23: every export pages and
					// resumes from cursors many times.
					s := newSource(t, hs.URL, func(o *Options) { o.PageSize = 20 })
					p, err := s.Probe(context.Background())
					if err != nil {
						t.Fatal(err)
					}
					if p.Now.IsZero() {
						t.Fatal("the probe read no upstream clock")
					}
					q := tc.q
					q.Until, q.Upstream = &p.Now, p.State
					c := &changes{fs: fs, src: sample(t).src, updated: map[string][]byte{}, deleted: map[string]bool{}}
					got := map[string][]byte{}
					for _, typ := range tc.types {
						var mid func()
						if changing {
							mid = func() { c.change(t, typ) }
						}
						g, bad, _ := readTypeChanging(t, s, q, typ, 23, mid)
						if len(bad) > 0 {
							t.Errorf("%s %s: %v", tc.name, typ, bad)
						}
						for k, v := range g {
							if _, dup := got[k]; dup {
								t.Errorf("%s: %s exported twice", tc.name, k)
							}
							got[k] = v
						}
					}
					hs.Close()
					if len(tc.want) == 0 {
						t.Fatalf("%s: the oracle expects nothing: the case tests nothing", tc.name)
					}
					t.Run(tc.name, func(t *testing.T) { c.check(t, got, tc.want, tc.keysOnly) })
				}
			})
		}
	}
}
