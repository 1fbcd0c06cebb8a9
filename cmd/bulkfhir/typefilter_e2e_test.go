package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// filterable is what the oracle decodes of each resource: the whole
// resource with encoding/json, independent of package typefilter.
type filterable struct {
	ResourceType string `json:"resourceType"`
	Status       string `json:"status"`
	Gender       string `json:"gender"`
	BirthDate    string `json:"birthDate"`
	Category     []struct {
		Coding []coding `json:"coding"`
	} `json:"category"`
	Code struct {
		Coding []coding `json:"coding"`
	} `json:"code"`
	EffectiveDateTime string `json:"effectiveDateTime"`
	ValueQuantity     *struct {
		Value  float64 `json:"value"`
		System string  `json:"system"`
		Code   string  `json:"code"`
	} `json:"valueQuantity"`
	Name []struct {
		Family string `json:"family"`
	} `json:"name"`
	Subject struct {
		Reference string `json:"reference"`
	} `json:"subject"`
}

type coding struct {
	System string `json:"system"`
	Code   string `json:"code"`
}

func hasCode(cs []coding, system, code string) bool {
	for _, c := range cs {
		if (system == "" || c.System == system) && c.Code == code {
			return true
		}
	}
	return false
}

// TestTypeFilterExportEqualsOracle exports with _typeFilter over the
// NDJSON source and checks the files hold exactly the resources an
// independent oracle selects: filters of a type are OR-ed, parameters of a
// filter AND-ed, and a requested type without a filter is exported whole.
func TestTypeFilterExportEqualsOracle(t *testing.T) {
	s := startServer(t, dataDir, "--max-file-bytes", "100000")
	src := sourceResources(t, dataDir)
	var somePatient string
	for k := range src {
		if id, ok := strings.CutPrefix(k, "Patient/"); ok && (somePatient == "" || id < somePatient) {
			somePatient = id
		}
	}
	labSince := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	filters := []string{
		"Observation?category=laboratory&date=ge2025-01-01",             // token AND date
		"Observation?value-quantity=gt37|http://unitsofmeasure.org|Cel", // quantity, OR-ed with the above
		"Condition?code=http://snomed.info/sct|44054006",                // token system|code
		"Patient?gender=female&birthdate=lt1990",                        // token AND date
		"Patient?family=ro",                                             // string prefix, OR-ed
		"MedicationRequest?status:not=active",                           // token :not
		"Procedure?subject=Patient/" + somePatient,                      // reference
	}
	oracle := func(r filterable) bool {
		switch r.ResourceType {
		case "Observation":
			lab := false
			for _, c := range r.Category {
				lab = lab || hasCode(c.Coding, "", "laboratory")
			}
			eff, err := time.Parse(time.RFC3339, r.EffectiveDateTime)
			labRecent := lab && err == nil && !eff.Before(labSince)
			fever := r.ValueQuantity != nil && r.ValueQuantity.Value > 37 &&
				r.ValueQuantity.System == "http://unitsofmeasure.org" && r.ValueQuantity.Code == "Cel"
			return labRecent || fever
		case "Condition":
			return hasCode(r.Code.Coding, "http://snomed.info/sct", "44054006")
		case "Patient":
			ro := false
			for _, n := range r.Name {
				ro = ro || strings.HasPrefix(strings.ToLower(n.Family), "ro")
			}
			return (r.Gender == "female" && r.BirthDate < "1990-01-01") || ro
		case "MedicationRequest":
			return r.Status != "active"
		case "Procedure":
			return r.Subject.Reference == "Patient/"+somePatient
		case "Encounter":
			return true // requested, no filter
		}
		return false
	}
	// expected applies the oracle to the requested types of a set of resources.
	expected := func(in map[string][]byte) (map[string][]byte, map[string][2]int) {
		want := map[string][]byte{}
		perType := map[string][2]int{} // selected, total
		for k, line := range in {
			switch typ, _, _ := strings.Cut(k, "/"); typ {
			case "Observation", "Condition", "Patient", "MedicationRequest", "Procedure", "Encounter":
			default:
				continue // not requested
			}
			var r filterable
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			c := perType[r.ResourceType]
			c[1]++
			if oracle(r) {
				want[k] = line
				c[0]++
			}
			perType[r.ResourceType] = c
		}
		return want, perType
	}
	want, perType := expected(src)
	for _, typ := range []string{"Observation", "Condition", "Patient", "MedicationRequest", "Procedure"} {
		if c := perType[typ]; c[0] == 0 || c[0] == c[1] {
			t.Fatalf("bad fixture: the %s filters select %d of %d", typ, c[0], c[1])
		}
	}
	q := url.Values{"_type": {"Observation,Condition,Patient,MedicationRequest,Procedure,Encounter"}, "_typeFilter": filters}
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?"+q.Encode(), kickHeaders(), ""), nil)
	if len(m.Error) != 0 {
		t.Errorf("error files: %+v", m.Error)
	}
	sameSet(t, download(t, m), want)

	// The same request as a POST Parameters body, one valueString each.
	var params []map[string]any
	params = append(params, map[string]any{"name": "_type", "valueString": q.Get("_type")})
	for _, f := range filters {
		params = append(params, map[string]any{"name": "_typeFilter", "valueString": f})
	}
	body, _ := json.Marshal(map[string]any{"resourceType": "Parameters", "parameter": params})
	m = waitManifest(t, kickoff(t, http.MethodPost, s.base+"/$export", kickHeaders("Content-Type", "application/fhir+json"), string(body)), nil)
	sameSet(t, download(t, m), want)

	// At Group level the filters apply within the members' compartment.
	groupWant, _ := expected(expectedCompartment(src, groupMembers(t, src, "diabetes-registry")))
	if len(groupWant) == 0 {
		t.Fatal("bad fixture: nothing of diabetes-registry passes the filters")
	}
	m = waitManifest(t, kickoff(t, http.MethodGet, s.base+"/Group/diabetes-registry/$export?"+q.Encode(), kickHeaders(), ""), nil)
	sameSet(t, download(t, m), groupWant)
}

// TestCapabilityStatementListsTypeFilterParameters checks C-05: each type
// lists the search parameters its _typeFilter accepts, and only those.
func TestCapabilityStatementListsTypeFilterParameters(t *testing.T) {
	s := startServer(t, dataDir)
	var cs struct {
		Rest []struct {
			Resource []struct {
				Type        string `json:"type"`
				SearchParam []struct {
					Name, Definition, Type string
				} `json:"searchParam"`
			} `json:"resource"`
		} `json:"rest"`
	}
	if err := json.Unmarshal(do(t, http.MethodGet, s.base+"/metadata", nil, "").body, &cs); err != nil || len(cs.Rest) == 0 {
		t.Fatalf("metadata: %v", err)
	}
	params := map[string]map[string]string{} // type → name → type
	for _, r := range cs.Rest[0].Resource {
		params[r.Type] = map[string]string{}
		for _, p := range r.SearchParam {
			params[r.Type][p.Name] = p.Type
			if r.Type == "Group" && p.Name == "name" {
				continue // the Group search interaction's own parameter (R4 defines none)
			}
			if !strings.HasPrefix(p.Definition, "http://hl7.org/fhir/SearchParameter/") {
				t.Errorf("%s.%s definition = %q", r.Type, p.Name, p.Definition)
			}
		}
	}
	for typ, want := range map[string]map[string]string{
		"Observation": {"code": "token", "date": "date", "value-quantity": "quantity", "subject": "reference", "_lastUpdated": "date"},
		"Patient":     {"name": "string", "birthdate": "date", "_id": "token", "_profile": "uri", "deceased": "token"},
		"Group":       {"identifier": "token", "member": "reference", "name": "string"},
	} {
		for name, pt := range want {
			if params[typ][name] != pt {
				t.Errorf("%s searchParam %s = %q, want type %s", typ, name, params[typ][name], pt)
			}
		}
	}
	for typ, name := range map[string]string{"Patient": "_text", "Observation": "code-value-quantity"} {
		if _, listed := params[typ][name]; listed {
			t.Errorf("%s lists %s, which _typeFilter refuses", typ, name)
		}
	}
	// What is listed is accepted at kick-off.
	for _, f := range []string{"Observation?value-quantity=gt5", "Patient?_profile=http://x", "Encounter?date=ge2024"} {
		typ, q, _ := strings.Cut(f, "?")
		name, _, _ := strings.Cut(q, "=")
		if _, listed := params[typ][name]; !listed {
			t.Errorf("%s %s is not listed", typ, name)
		}
		waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type="+typ+"&_typeFilter="+url.QueryEscape(f), kickHeaders(), ""), nil)
	}
}

// TestEveryParameterHonouredOrRefused checks P-19 for the parameters of
// the STU3 and current builds: each is honoured (202) or refused with an
// OperationOutcome naming it, never silently ignored.
func TestEveryParameterHonouredOrRefused(t *testing.T) {
	s := startServer(t, dataDir)
	cases := []struct {
		query   string
		refused string // the name the OperationOutcome must carry; "" for 202
	}{
		{"_type=Patient&_typeFilter=" + url.QueryEscape("Patient?gender=female"), ""},
		{"_type=Patient&_typeFilter=" + url.QueryEscape("Patient?deceased=false"), ""},
		{"_type=Patient&_typeFilter=" + url.QueryEscape("Patient?gender:in=http://x/vs"), "gender:in"},
		{"_type=Patient&_typeFilter=" + url.QueryEscape("Patient?_has:Observation:patient:code=1"), "_has"},
		{"_type=Patient&_maximumFileSize=2000000", ""},
		{"_type=Patient&_minimumFileSize=1000", ""},
		{"_type=Patient&_until=2030-01-01T00:00:00Z", ""},
		{"_type=Patient&_elements=gender", ""},
		{"_type=Patient&organizeOutputBy=Patient", ""},
		{"_type=Patient&organizeOutputBy=Encounter", "organizeOutputBy"},
		{"_type=Patient&allowPartialManifests=true", ""},
		{"_type=Patient&allowPartialManifests=maybe", "allowPartialManifests"},
		{"_type=Patient&_count=10", "_count"},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			r := do(t, http.MethodGet, s.base+"/$export?"+tc.query, kickHeaders(), "")
			if tc.refused == "" {
				if r.status != http.StatusAccepted {
					t.Fatalf("status %d, want 202: %s", r.status, r.body)
				}
				waitManifest(t, r.header.Get("Content-Location"), nil)
				return
			}
			requireOutcome(t, r, 400, tc.refused)
		})
	}
}
