package exporttest

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// OrganizedFile is one output file of an export organized by Patient, as
// the manifest lists it, with its downloaded body.
type OrganizedFile struct {
	URL, ContinuesInFile string
	Body                 []byte
}

// CheckBlocks is the oracle of organizeOutputBy=Patient (N-03): every file
// is made of blocks, each a Parameters header referencing a Patient, then
// that Patient when it is exported, then resources in that patient's
// compartment; a patient has one block, except that a block split across
// files goes on at the top of the file its item's continuesInFile names,
// under the same header. It returns the resources by "Type/id" (each once)
// and how many blocks were split.
func CheckBlocks(t testing.TB, files []OrganizedFile) (map[string][]byte, int) {
	t.Helper()
	byPath := map[string]int{}
	for i, f := range files {
		byPath[urlPath(f.URL)] = i
	}
	continued := map[int]string{} // file index → the patient its first block continues
	got := map[string][]byte{}
	seen := map[string]bool{} // patients with a block already
	splits := 0
	for i, f := range files {
		lines := bytes.Split(bytes.TrimRight(f.Body, "\n"), []byte("\n"))
		patient, first := "", true
		var last string
		for n, line := range lines {
			h, ok := fhir.Peek(line)
			if !ok {
				t.Fatalf("file %d line %d is not a resource: %.100s", i, n, line)
			}
			if h.ResourceType == "Parameters" {
				patient = header(t, line)
				if first && continued[i] != "" {
					if patient != continued[i] {
						t.Errorf("file %d continues Patient/%s but starts with Patient/%s", i, continued[i], patient)
					}
				} else {
					if seen[patient] {
						t.Errorf("Patient/%s has a second block (file %d) not linked by continuesInFile", patient, i)
					}
					if n+1 < len(lines) {
						if nh, _ := fhir.Peek(lines[n+1]); nh.ResourceType == "Patient" && nh.ID != patient {
							t.Errorf("the block of Patient/%s starts with Patient/%s", patient, nh.ID)
						}
					}
				}
				seen[patient] = true
				first, last = false, patient
				continue
			}
			if patient == "" {
				t.Fatalf("file %d starts with a %s, not a header", i, h.ResourceType)
			}
			in := false
			fhir.CompartmentPatients(h.ResourceType, line, func(id string) bool {
				in = in || id == patient
				return !in && h.ResourceType != "Patient"
			})
			if !in {
				t.Errorf("%s/%s is in the block of Patient/%s, outside its compartment", h.ResourceType, h.ID, patient)
			}
			if h.ResourceType == "Patient" && n > 0 {
				if ph, _ := fhir.Peek(lines[n-1]); ph.ResourceType != "Parameters" {
					t.Errorf("Patient/%s is not right after its header", h.ID)
				}
			}
			key := h.ResourceType + "/" + h.ID
			if _, dup := got[key]; dup {
				t.Errorf("%s exported twice", key)
			}
			got[key] = append([]byte(nil), line...)
		}
		if f.ContinuesInFile != "" {
			j, ok := byPath[urlPath(f.ContinuesInFile)]
			if !ok {
				t.Errorf("file %d continuesInFile %s, which the manifest does not list", i, f.ContinuesInFile)
				continue
			}
			continued[j] = last
			splits++
		}
	}
	return got, splits
}

func header(t testing.TB, line []byte) string {
	t.Helper()
	var p struct {
		ResourceType string `json:"resourceType"`
		Parameter    []struct {
			Name           string          `json:"name"`
			ValueReference json.RawMessage `json:"valueReference"`
		} `json:"parameter"`
	}
	if err := json.Unmarshal(line, &p); err != nil || len(p.Parameter) != 1 || p.Parameter[0].Name != "header" {
		t.Fatalf("malformed block header %s", line)
	}
	var ref struct {
		Reference string `json:"reference"`
	}
	if err := json.Unmarshal(p.Parameter[0].ValueReference, &ref); err != nil || !strings.HasPrefix(ref.Reference, "Patient/") {
		t.Fatalf("block header does not reference a Patient: %s", line)
	}
	return strings.TrimPrefix(ref.Reference, "Patient/")
}

func urlPath(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Path
}
