package functions_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// TestTypeFilterOnAWS runs _typeFilter through the API Gateway event, the
// state machine and the S3 source: the export equals an encoding/json
// oracle, a requested type without a filter comes whole, every output item
// reports its fileSize, and an unsupported parameter is refused by name.
func TestTypeFilterOnAWS(t *testing.T) {
	cl := need(t)
	src := exporttest.ReadResources(t, cl.dataDir)
	want := map[string][]byte{}
	lab := 0
	for k, line := range src {
		typ, _, _ := strings.Cut(k, "/")
		switch typ {
		case "Condition":
			want[k] = line
		case "Observation":
			var r struct {
				Category []struct {
					Coding []struct{ System, Code string } `json:"coding"`
				} `json:"category"`
			}
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			for _, c := range r.Category {
				for _, cd := range c.Coding {
					if cd.Code == "laboratory" && cd.System == "http://terminology.hl7.org/CodeSystem/observation-category" {
						want[k] = line
						lab++
					}
				}
			}
		}
	}
	if lab == 0 {
		t.Fatal("bad fixture: no laboratory Observation")
	}
	q := url.Values{"_type": {"Observation,Condition"},
		"_typeFilter": {"Observation?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"}}
	m := completed(t, kickoff(t, http.MethodGet, "/fhir/$export", q.Encode(), ""))
	for _, o := range m.Output {
		if o.FileSize == nil || *o.FileSize <= 0 {
			t.Errorf("%s output item has fileSize %v", o.Type, o.FileSize)
		}
	}
	exporttest.SameSet(t, download(t, m), want)

	q.Set("_typeFilter", "Observation?code:in=http://example.org/vs")
	if r := apiRequest(t, http.MethodGet, "/fhir/$export", q.Encode(), "", ""); r.StatusCode != 400 || !strings.Contains(r.Body, "code:in") {
		t.Errorf("unsupported modifier: %d %s", r.StatusCode, r.Body)
	}
}
