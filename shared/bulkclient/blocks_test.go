package bulkclient_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

func hdr(p string) string {
	return `{"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":"Patient/` + p + `"}}]}`
}
func pat(id string) string { return `{"resourceType":"Patient","id":"` + id + `"}` }
func obs(id string, patients ...string) string {
	s := `{"resourceType":"Observation","id":"` + id + `","subject":{"reference":"Patient/` + patients[0] + `"}`
	for _, p := range patients[1:] {
		s += `,"performer":[{"reference":"Patient/` + p + `"}]`
	}
	return s + "}"
}

// organizedFile is one output file of a test manifest; continues is the
// index of the file its item's continuesInFile names (-1: none, 99: a URL
// the manifest does not list).
type organizedFile struct {
	lines     []string
	continues int
}

// checkOrganized runs Blocks over files as verify does and returns every
// problem: line errors and chain problems.
func checkOrganized(t *testing.T, b *bulkclient.Blocks, files []organizedFile) []string {
	t.Helper()
	var items []map[string]any
	for i, f := range files {
		// The links to one file differ in their signatures.
		item := map[string]any{"url": fmt.Sprintf("https://f.test/job/%d.ndjson?sig=a%d", i, i), "count": len(f.lines)}
		if f.continues >= 0 {
			item["continuesInFile"] = fmt.Sprintf("https://f.test/job/%d.ndjson?sig=b%d", f.continues, f.continues)
		}
		items = append(items, item)
	}
	raw, _ := json.Marshal(map[string]any{"transactionTime": "2026-01-01T00:00:00Z", "request": "x", "requiresAccessToken": false,
		"outputOrganizedBy": "Patient", "output": items, "error": []any{}})
	mf, err := bulkclient.ManifestFiles(raw)
	if err != nil {
		t.Fatal(err)
	}
	var problems []string
	for i, f := range files {
		for n, line := range f.lines {
			if _, _, err := b.Line(mf[i].Name, int64(n+1), []byte(line)); err != nil {
				problems = append(problems, mf[i].Name+": "+err.Error())
				break // verify stops reading a file at its first bad line
			}
		}
	}
	return append(problems, b.Chains(mf)...)
}

func TestBlocks(t *testing.T) {
	selected := map[string]bool{"a": true, "b": true, "c": true}
	for _, tc := range []struct {
		name     string
		patients map[string]bool
		first    bool
		types    map[string]bool
		files    []organizedFile
		want     string // a problem that must be reported; "" for none
	}{
		{name: "blocks, a shared resource once, a split block", patients: selected, first: true, files: []organizedFile{
			{[]string{hdr("a"), pat("a"), obs("o1", "a"), obs("o2", "b", "a"), hdr("b"), pat("b")}, 1},
			{[]string{hdr("b"), obs("o3", "b"), hdr("c"), obs("o4", "c")}, -1},
		}},
		{name: "without a selection every patient is accepted", files: []organizedFile{
			{[]string{hdr("x"), pat("x"), obs("o1", "x", "a")}, -1},
		}},
		{name: "a resource outside its block's patient's compartment", files: []organizedFile{
			{[]string{hdr("a"), pat("a"), obs("o1", "b")}, -1},
		}, want: "Observation/o1 is in the block of Patient/a, outside that patient's compartment"},
		{name: "a block of a patient outside the export's patients", patients: selected, files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a"), hdr("z"), obs("o2", "z")}, -1},
		}, want: "heads a block of Patient/z, who is not one of the export's patients"},
		{name: "a shared resource in a later patient's block", patients: selected, first: true, files: []organizedFile{
			{[]string{hdr("b"), obs("o1", "b", "a")}, -1},
		}, want: "belongs in that of Patient/a"},
		{name: "without FirstOwner a shared resource may be in either block", patients: selected, files: []organizedFile{
			{[]string{hdr("b"), obs("o1", "b", "a")}, -1},
		}},
		{name: "a resource before any header", files: []organizedFile{
			{[]string{obs("o1", "a"), hdr("a")}, -1},
		}, want: "a Observation before any block header"},
		{name: "the Patient of another block", files: []organizedFile{
			{[]string{hdr("a"), pat("b")}, -1},
		}, want: "Patient/b in the block of Patient/a"},
		{name: "the Patient after other resources", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a"), pat("a")}, -1},
		}, want: "Patient/a is not right after its block header"},
		{name: "a Parameters that is no header", files: []organizedFile{
			{[]string{`{"resourceType":"Parameters","parameter":[{"name":"other","valueString":"x"}]}`}, -1},
		}, want: "without a header parameter"},
		{name: "a header referencing a Group", files: []organizedFile{
			{[]string{strings.Replace(hdr("a"), "Patient/a", "Group/a", 1)}, -1},
		}, want: `references "Group/a", not a Patient`},
		{name: "a type not asked for", types: map[string]bool{"Patient": true}, files: []organizedFile{
			{[]string{hdr("a"), pat("a"), obs("o1", "a")}, -1},
		}, want: "a Observation, a type the export did not ask for"},
		{name: "broken chain: the next file starts with another block", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a")}, 1},
			{[]string{hdr("b"), obs("o2", "b")}, -1},
		}, want: "continues the block of Patient/a from Patient-blocks.1.ndjson, but starts with the block of Patient/b"},
		{name: "broken chain: a link to a file the manifest does not list", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a")}, 99},
		}, want: "continuesInFile https://f.test/job/99.ndjson?sig=b99 is not a file of the manifest"},
		{name: "broken chain: a file continued twice", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a")}, 2},
			{[]string{hdr("a"), obs("o2", "a")}, 2},
			{[]string{hdr("a"), obs("o3", "a")}, -1},
		}, want: "continued both from"},
		{name: "a patient's second block without a link", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a")}, -1},
			{[]string{hdr("a"), obs("o2", "a")}, -1},
		}, want: "Patient/a has 2 blocks"},
		{name: "a patient's block twice in one file", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a"), hdr("b"), hdr("a")}, -1},
		}, want: "Patient/a has 2 blocks"},
		{name: "broken chain: a link to an empty file", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a")}, 1},
			{nil, -1},
		}, want: "but starts with no block header"},
		{name: "a link to the file itself", files: []organizedFile{
			{[]string{hdr("a"), obs("o1", "a")}, 0},
		}, want: "continuesInFile names the file itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			problems := checkOrganized(t, &bulkclient.Blocks{Patients: tc.patients, FirstOwner: tc.first, Types: tc.types}, tc.files)
			got := strings.Join(problems, "\n")
			switch {
			case tc.want == "" && len(problems) > 0:
				t.Errorf("problems in well-formed blocks:\n%s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("problems = %q, want one saying %q", got, tc.want)
			}
		})
	}
}
