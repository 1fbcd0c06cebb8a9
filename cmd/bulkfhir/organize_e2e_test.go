package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
)

// organized downloads an organized manifest's files and checks their
// blocks; it returns the resources and how many blocks were split.
func organized(t *testing.T, m manifest) (map[string][]byte, int) {
	t.Helper()
	if m.OutputOrganizedBy != "Patient" {
		t.Errorf("outputOrganizedBy = %q, want Patient", m.OutputOrganizedBy)
	}
	var files []exporttest.OrganizedFile
	for _, o := range m.Output {
		if o.Type != "" {
			t.Errorf("output item has type %q in an organized manifest", o.Type)
		}
		r := do(t, http.MethodGet, o.URL, nil, "")
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %d", o.URL, r.status)
		}
		if o.FileSize == nil || *o.FileSize != int64(len(r.body)) {
			t.Errorf("fileSize = %v, file has %d bytes", o.FileSize, len(r.body))
		}
		files = append(files, exporttest.OrganizedFile{URL: o.URL, ContinuesInFile: o.ContinuesInFile, Body: r.body})
	}
	return exporttest.CheckBlocks(t, files)
}

// TestOrganizeOutputByPatient: at every level and on the NDJSON and REST
// sources, organizeOutputBy=Patient writes well-formed blocks holding
// exactly the oracle's resources, each in its patient's block; files small
// enough to split blocks carry continuesInFile and repeat the header.
func TestOrganizeOutputByPatient(t *testing.T) {
	src := sourceResources(t, dataDir)
	all := map[string]bool{}
	for key := range src {
		if typ, id, _ := strings.Cut(key, "/"); typ == "Patient" {
			all[id] = true
		}
	}
	_, up := startUpstream(t, fhirtest.Options{MaxCount: 50})
	servers := map[string]*server{
		"ndjson": startServer(t, dataDir, "--max-file-bytes", "30000"),
		"rest":   startServer(t, "", "--source-url", up.URL, "--source-page-size", "40", "--max-file-bytes", "30000"),
	}
	members := groupMembers(t, src, "care-team-a")
	for name, s := range servers {
		for _, tc := range []struct {
			level, path string
			want        map[string][]byte
		}{
			{"group", "/Group/care-team-a/$export", expectedCompartment(src, members)},
			{"patient", "/Patient/$export", expectedCompartment(src, all)},
			{"system", "/$export", expectedCompartment(src, all)},
		} {
			t.Run(name+"/"+tc.level, func(t *testing.T) {
				m := waitManifest(t, kickoff(t, http.MethodGet, s.base+tc.path+"?organizeOutputBy=Patient&_maximumFileSize=30000", kickHeaders(), ""), nil)
				got, splits := organized(t, m)
				t.Logf("%d files, %d resources, %d split blocks", len(m.Output), len(got), splits)
				sameSet(t, got, tc.want)
				if splits == 0 {
					t.Error("no block was split at 30,000 bytes; continuesInFile is untested")
				}
			})
		}
	}

	s := servers["ndjson"]
	t.Run("typeFilter", func(t *testing.T) {
		// _typeFilter filters each type on its own: a male member has no
		// Patient line but still heads the block of his Conditions.
		want := map[string][]byte{}
		for key, line := range expectedCompartment(src, members) {
			typ, _, _ := strings.Cut(key, "/")
			if typ == "Condition" || (typ == "Patient" && strings.Contains(string(line), `"gender":"female"`)) {
				want[key] = line
			}
		}
		q := "organizeOutputBy=Patient&_type=Patient,Condition&_typeFilter=" + url.QueryEscape("Patient?gender=female")
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Group/care-team-a/$export?"+q, kickHeaders(), ""), nil)
		got, _ := organized(t, m)
		sameSet(t, got, want)
		// Every member with a Condition or a kept Patient heads a block.
		wantHeads := map[string]bool{}
		for key := range want {
			for p := range members {
				if key == "Patient/"+p || strings.Contains(string(want[key]), `"reference":"Patient/`+p+`"`) {
					wantHeads[p] = true
				}
			}
		}
		heads := map[string]bool{}
		for _, o := range m.Output {
			for _, line := range strings.Split(string(do(t, http.MethodGet, o.URL, nil, "").body), "\n") {
				if ref, ok := strings.CutPrefix(line, `{"resourceType":"Parameters","parameter":[{"name":"header","valueReference":{"reference":"Patient/`); ok {
					heads[strings.TrimSuffix(ref, `"}}]}`)] = true
				}
			}
		}
		if len(heads) != len(wantHeads) {
			t.Errorf("%d patients head blocks, want %d (members with a Condition or a female Patient)", len(heads), len(wantHeads))
		}
	})
	t.Run("capability statement", func(t *testing.T) {
		r := do(t, http.MethodGet, s.base+"/metadata", nil, "")
		for _, p := range []string{"organizeOutputBy=Patient", "allowPartialManifests=true"} {
			if !strings.Contains(string(r.body), p) {
				t.Errorf("the CapabilityStatement does not document %s", p)
			}
		}
	})
	t.Run("refusals", func(t *testing.T) {
		requireOutcome(t, do(t, http.MethodGet, s.base+"/Patient/$export?organizeOutputBy=Encounter", kickHeaders(), ""), 400, "organizeOutputBy")
		requireOutcome(t, do(t, http.MethodGet, s.base+"/$export?organizeOutputBy=Patient&_type=Organization", kickHeaders(), ""), 400, "_type")
		// Lenient: another type is ignored with a warning, and the output
		// is organized by type.
		m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Patient/$export?organizeOutputBy=Encounter&_type=Patient",
			kickHeaders("Prefer", "handling=lenient"), ""), nil)
		if m.OutputOrganizedBy != "" || len(m.Output) == 0 || m.Output[0].Type != "Patient" || len(m.Error) != 1 {
			t.Errorf("lenient manifest = %+v, want Patient files by type and one warning file", m)
		}
	})
}
