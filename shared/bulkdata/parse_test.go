package bulkdata

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

func parseQuery(t *testing.T, level Level, q string, lenient bool) (*Request, *Error) {
	t.Helper()
	return Parse(Kickoff{Method: http.MethodGet, Level: level, RawQuery: q, Prefer: Preferences{RespondAsync: true, Lenient: lenient}, Now: now})
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		name      string
		level     Level
		query     string
		wantErr   string // substring of the rejection; "" means accepted
		wantTypes []string
		// lenientDrops: handling=lenient accepts the rejected query with a
		// warning; otherwise lenient refuses it too (dropping would widen).
		lenientDrops bool
		check        func(t *testing.T, r *Request)
	}{
		{name: "empty", level: LevelSystem, query: ""},
		{name: "outputFormat full", level: LevelSystem, query: "_outputFormat=application/fhir%2Bndjson"},
		{name: "outputFormat short", level: LevelSystem, query: "_outputFormat=application/ndjson"},
		{name: "outputFormat shortest", level: LevelSystem, query: "_outputFormat=ndjson"},
		{name: "outputFormat csv", level: LevelSystem, query: "_outputFormat=text/csv", wantErr: "_outputFormat", lenientDrops: true},
		{name: "outputFormat twice", level: LevelSystem, query: "_outputFormat=ndjson&_outputFormat=ndjson", wantErr: "only once"},
		{name: "since ok", level: LevelSystem, query: "_since=2020-01-01T00:00:00Z", check: func(t *testing.T, r *Request) {
			if r.Since == nil || !r.Since.Equal(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("since = %v", r.Since)
			}
		}},
		{name: "since unencoded plus", level: LevelSystem, query: "_since=2020-01-01T02:00:00 02:00", check: func(t *testing.T, r *Request) {
			if r.Since == nil || !r.Since.Equal(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("since = %v", r.Since)
			}
		}},
		{name: "since garbage", level: LevelSystem, query: "_since=2020-13-45", wantErr: "_since"},
		{name: "since no zone", level: LevelSystem, query: "_since=2020-01-01T00:00:00", wantErr: "_since"},
		{name: "since date only", level: LevelSystem, query: "_since=2020-01-01", wantErr: "_since"},
		{name: "since bdt invalid", level: LevelSystem, query: "_since=0000-60-01T30:70:80%2B05:00", wantErr: "_since"},
		{name: "since future", level: LevelSystem, query: "_since=2057-01-01T00:00:00%2B05:00", wantErr: "future"},
		{name: "until before since", level: LevelSystem, query: "_since=2020-01-02T00:00:00Z&_until=2020-01-01T00:00:00Z", wantErr: "_until"},
		{name: "types comma and repeat", level: LevelSystem, query: "_type=Patient,%20Observation&_type=Condition&_type=Patient", wantTypes: []string{"Patient", "Observation", "Condition"}},
		{name: "type unknown", level: LevelSystem, query: "_type=MissingType", wantErr: "MissingType"},
		{name: "type lower case", level: LevelSystem, query: "_type=patient", wantErr: "patient"},
		{name: "elements", level: LevelSystem, query: "_elements=Patient.name,id&_elements=birthDate", check: func(t *testing.T, r *Request) {
			if strings.Join(r.Elements, "|") != "Patient.name|id|birthDate" {
				t.Errorf("elements = %v", r.Elements)
			}
		}},
		{name: "elements nested", level: LevelSystem, query: "_elements=Patient.name.given", wantErr: "root elements"},
		{name: "elements bad type", level: LevelSystem, query: "_elements=Foo.name", wantErr: "Foo"},
		{name: "patient in GET", level: LevelPatient, query: "patient=Patient/1", wantErr: "POST"},
		{name: "patient at system", level: LevelSystem, query: "patient=Patient/1", wantErr: "system level"},
		{name: "iad known", level: LevelSystem, query: "includeAssociatedData=LatestProvenanceResources,RelevantProvenanceResources", check: func(t *testing.T, r *Request) {
			if len(r.IncludeAssociatedData) != 2 {
				t.Errorf("includeAssociatedData = %v", r.IncludeAssociatedData)
			}
		}},
		{name: "iad custom", level: LevelSystem, query: "includeAssociatedData=_mine"},
		{name: "iad unknown", level: LevelSystem, query: "includeAssociatedData=Everything", wantErr: "includeAssociatedData", lenientDrops: true},
		{name: "typeFilter ok", level: LevelSystem, query: "_typeFilter=Observation%3Fcategory%3Dlaboratory,MedicationRequest%3Fstatus%3Dactive", check: func(t *testing.T, r *Request) {
			if len(r.TypeFilters) != 2 || r.TypeFilters[1] != "MedicationRequest?status=active" {
				t.Errorf("typeFilters = %q", r.TypeFilters)
			}
		}},
		{name: "typeFilter comma in value", level: LevelSystem, query: "_typeFilter=Observation%3Fcode%3Da%2Cb", check: func(t *testing.T, r *Request) {
			if len(r.TypeFilters) != 1 || r.TypeFilters[0] != "Observation?code=a,b" {
				t.Errorf("typeFilters = %q", r.TypeFilters)
			}
		}},
		{name: "typeFilter include", level: LevelSystem, query: "_typeFilter=Observation%3F_include%3DObservation:subject", wantErr: "_include"},
		{name: "typeFilter no type", level: LevelSystem, query: "_typeFilter=%3Fname%3Dx", wantErr: "_typeFilter"},
		{name: "unknown parameter", level: LevelSystem, query: "_foo=bar", wantErr: "_foo"},
		{name: "organize by other type", level: LevelPatient, query: "organizeOutputBy=Encounter", wantErr: "organizeOutputBy", lenientDrops: true},
		{name: "organize by Patient", level: LevelPatient, query: "organizeOutputBy=Patient", check: func(t *testing.T, r *Request) {
			if r.OrganizeOutputBy != "Patient" {
				t.Errorf("OrganizeOutputBy = %q, want Patient", r.OrganizeOutputBy)
			}
		}},
		{name: "organize twice", level: LevelPatient, query: "organizeOutputBy=Patient&organizeOutputBy=Patient", wantErr: "only once"},
		{name: "partial manifests", level: LevelSystem, query: "allowPartialManifests=true", check: func(t *testing.T, r *Request) {
			if !r.AllowPartialManifests {
				t.Error("AllowPartialManifests = false, want true")
			}
		}},
		{name: "partial manifests false", level: LevelSystem, query: "allowPartialManifests=false", check: func(t *testing.T, r *Request) {
			if r.AllowPartialManifests {
				t.Error("AllowPartialManifests = true, want false")
			}
		}},
		{name: "partial manifests not boolean", level: LevelSystem, query: "allowPartialManifests=yes", wantErr: "allowPartialManifests", lenientDrops: true},
		{name: "one type of two unknown", level: LevelSystem, query: "_type=Patient,MissingType", wantErr: "MissingType", lenientDrops: true},
		{name: "since twice", level: LevelSystem, query: "_since=2020-01-01T00:00:00Z&_since=2021-01-01T00:00:00Z", wantErr: "only once"},
		{name: "until twice", level: LevelSystem, query: "_until=2020-01-01T00:00:00Z&_until=2020-01-01T00:00:00Z", wantErr: "only once"},
		{name: "type empty", level: LevelSystem, query: "_type=", wantErr: "every type"},
		{name: "type only commas", level: LevelSystem, query: "_type=,,", wantErr: "every type"},
		{name: "typo of typeFilter", level: LevelSystem, query: "_typeFiltr=Patient%3Fgender%3Dmale", wantErr: "_typeFiltr"},
		{name: "typeFilter bad inner escape", level: LevelSystem, query: "_typeFilter=Observation%3Fcode%3D%25zz", wantErr: "_typeFilter"},
		{name: "typeFilter inner semicolon", level: LevelSystem, query: "_typeFilter=Observation%3Fcode%3Da%3Bx", wantErr: "_typeFilter"},
		// Malformed queries (ParseQuery): refused whatever the handling.
		{name: "semicolon after type", level: LevelSystem, query: "_type=Patient;", wantErr: "';'"},
		{name: "semicolon in typeFilter", level: LevelSystem, query: "_typeFilter=Observation%3Fcode%3Da;x", wantErr: "';'"},
		{name: "bad escape in value", level: LevelSystem, query: "_type=%zz", wantErr: "percent-encoding"},
		{name: "bad escape in name", level: LevelSystem, query: "%zz=1&_type=Patient", wantErr: "percent-encoding"},
		{name: "no name", level: LevelSystem, query: "=Patient", wantErr: "no parameter name"},
		{name: "too many", level: LevelSystem, query: strings.Repeat("_format=json&", 50) + strings.Repeat("_type=Patient&", 60), wantErr: "more than 100"},
		{name: "too many ampersands", level: LevelSystem, query: strings.Repeat("&", 20000) + "_type=Patient", wantErr: "more than 100"},
		{name: "empty pairs skipped", level: LevelSystem, query: "&_type=Patient&&", wantTypes: []string{"Patient"}},
		{name: "pair without value", level: LevelSystem, query: "_pretty"},
		{name: "format ignored", level: LevelSystem, query: "_format=json"},
		{name: "file sizes", level: LevelSystem, query: "_maximumFileSize=2000000&_minimumFileSize=1000", check: func(t *testing.T, r *Request) {
			if r.MaxFileSize != 2000000 || r.MinFileSize != 1000 {
				t.Errorf("file sizes = %d, %d", r.MaxFileSize, r.MinFileSize)
			}
		}},
		{name: "file size not a number", level: LevelSystem, query: "_maximumFileSize=1MB", wantErr: "_maximumFileSize", lenientDrops: true},
		{name: "file size zero", level: LevelSystem, query: "_minimumFileSize=0", wantErr: "_minimumFileSize", lenientDrops: true},
		{name: "file size twice", level: LevelSystem, query: "_maximumFileSize=5000&_maximumFileSize=6000", wantErr: "only once"},
		{name: "minimum above maximum", level: LevelSystem, query: "_maximumFileSize=5000&_minimumFileSize=6000", wantErr: "_minimumFileSize", lenientDrops: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseQuery(t, tc.level, tc.query, false)
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("accepted %q, want rejection mentioning %q", tc.query, tc.wantErr)
				}
				if err.Status != http.StatusBadRequest {
					t.Errorf("status = %d, want 400", err.Status)
				}
				if !strings.Contains(string(err.Outcome.JSON()), tc.wantErr) {
					t.Errorf("outcome %s does not mention %q", err.Outcome.JSON(), tc.wantErr)
				}
				lr, lerr := parseQuery(t, tc.level, tc.query, true)
				if !tc.lenientDrops {
					// Lenient handling refuses what it may not drop.
					if lerr == nil || lerr.Status != http.StatusBadRequest {
						t.Fatalf("lenient: got %+v, %v; want a 400", lr, lerr)
					}
					return
				}
				// Lenient handling accepts it and records a warning.
				if lerr != nil {
					t.Fatalf("lenient: rejected: %v", lerr)
				}
				if len(lr.Ignored) == 0 || lr.Ignored[0].Severity != "warning" {
					t.Errorf("lenient: ignored = %+v, want a warning", lr.Ignored)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected %q: %v", tc.query, err)
			}
			if r.OutputFormat != NDJSON {
				t.Errorf("outputFormat = %q", r.OutputFormat)
			}
			if tc.wantTypes != nil && strings.Join(r.Types, ",") != strings.Join(tc.wantTypes, ",") {
				t.Errorf("types = %v, want %v", r.Types, tc.wantTypes)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestParseParameters(t *testing.T) {
	tests := []struct {
		name        string
		level       Level
		contentType string
		body        string
		wantStatus  int // 0: accepted
		check       func(t *testing.T, r *Request)
	}{
		{name: "full", level: LevelPatient, contentType: "application/fhir+json", body: `{"resourceType":"Parameters","parameter":[
			{"name":"_type","valueString":"Patient,Observation"},
			{"name":"_since","valueInstant":"2020-01-01T00:00:00Z"},
			{"name":"patient","valueReference":{"reference":"Patient/a"}},
			{"name":"patient","valueReference":{"reference":"https://x.org/fhir/Patient/b"}},
			{"name":"_outputFormat","valueString":"ndjson"},
			{"name":"includeAssociatedData","valueCoding":{"code":"LatestProvenanceResources"}}]}`,
			check: func(t *testing.T, r *Request) {
				if strings.Join(r.Patients, ",") != "a,b" || len(r.Types) != 2 || r.Since == nil || len(r.IncludeAssociatedData) != 1 {
					t.Errorf("request = %+v", r)
				}
			}},
		{name: "empty body", level: LevelSystem, contentType: "", body: ""},
		{name: "json content type", level: LevelSystem, contentType: "application/json; charset=utf-8", body: `{"resourceType":"Parameters"}`},
		{name: "wrong content type", level: LevelSystem, contentType: "text/plain", body: `{"resourceType":"Parameters"}`, wantStatus: 415},
		{name: "not json", level: LevelSystem, contentType: "application/fhir+json", body: `{nope`, wantStatus: 400},
		{name: "not parameters", level: LevelSystem, contentType: "application/fhir+json", body: `{"resourceType":"Patient"}`, wantStatus: 400},
		{name: "no name", level: LevelSystem, contentType: "application/fhir+json", body: `{"resourceType":"Parameters","parameter":[{"valueString":"x"}]}`, wantStatus: 400},
		{name: "no value", level: LevelSystem, contentType: "application/fhir+json", body: `{"resourceType":"Parameters","parameter":[{"name":"_type"}]}`, wantStatus: 400},
		{name: "patient as string", level: LevelPatient, contentType: "application/fhir+json", body: `{"resourceType":"Parameters","parameter":[{"name":"patient","valueString":"Patient/a"}]}`, wantStatus: 400},
		{name: "patient at system", level: LevelSystem, contentType: "application/fhir+json", body: `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/a"}}]}`, wantStatus: 400},
		{name: "bad type", level: LevelSystem, contentType: "application/fhir+json", body: `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"MissingType"}]}`, wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(Kickoff{Method: http.MethodPost, Level: tc.level, ContentType: tc.contentType, Body: []byte(tc.body),
				Prefer: Preferences{RespondAsync: true}, Now: now})
			if tc.wantStatus != 0 {
				if err == nil {
					t.Fatalf("accepted, want %d", tc.wantStatus)
				}
				if err.Status != tc.wantStatus {
					t.Errorf("status = %d, want %d (%v)", err.Status, tc.wantStatus, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

func TestGroupIDIsAFHIRID(t *testing.T) {
	for id, ok := range map[string]bool{"g": true, "a.b-C9": true, "": false, ".": false, "..": false, "a/b": false, "a b": false, strings.Repeat("g", 65): false} {
		_, err := Parse(Kickoff{Method: http.MethodGet, Level: LevelGroup, GroupID: id, Prefer: Preferences{RespondAsync: true}, Now: now})
		if (err == nil) != ok {
			t.Errorf("Group/%q: err = %v, want ok=%v", id, err, ok)
		}
	}
}

func TestKickoffHeaders(t *testing.T) {
	tests := []struct {
		name       string
		header     http.Header
		wantStatus int
		want       Preferences
	}{
		{name: "ok", header: http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async"}}, want: Preferences{RespondAsync: true}},
		{name: "list", header: http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"respond-async, handling=lenient"}}, want: Preferences{RespondAsync: true, Lenient: true}},
		{name: "repeated", header: http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"handling=lenient", "respond-async"}}, want: Preferences{RespondAsync: true, Lenient: true}},
		{name: "plain json accept", header: http.Header{"Accept": {"application/json"}, "Prefer": {"respond-async"}}, wantStatus: 406},
		{name: "fhir json refused by q=0", header: http.Header{"Accept": {"application/fhir+json;q=0, application/json"}, "Prefer": {"respond-async"}}, wantStatus: 406},
		{name: "json and fhir json", header: http.Header{"Accept": {"application/json, application/fhir+json;q=0.5"}, "Prefer": {"respond-async"}}, want: Preferences{RespondAsync: true}},
		{name: "application wildcard", header: http.Header{"Accept": {"application/*"}, "Prefer": {"respond-async"}}, want: Preferences{RespondAsync: true}},
		{name: "separate status", header: http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async, separate-export-status"}}, want: Preferences{RespondAsync: true, SeparateExportStatus: true}},
		{name: "accept with params", header: http.Header{"Accept": {"application/fhir+json; fhirVersion=4.0"}, "Prefer": {"respond-async"}}, want: Preferences{RespondAsync: true}},
		{name: "wait", header: http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async, wait=5"}}, want: Preferences{RespondAsync: true, Wait: 5}},
		{name: "wait quoted, repeated", header: http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async", `wait="3"`}}, want: Preferences{RespondAsync: true, Wait: 3}},
		{name: "wait not a number", header: http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async, wait=soon"}}, want: Preferences{RespondAsync: true}},
		{name: "wait negative", header: http.Header{"Accept": {"*/*"}, "Prefer": {"respond-async, wait=-1"}}, want: Preferences{RespondAsync: true}},
		{name: "no accept", header: http.Header{"Prefer": {"respond-async"}}, wantStatus: 400},
		{name: "html accept", header: http.Header{"Accept": {"text/html"}, "Prefer": {"respond-async"}}, wantStatus: 406},
		{name: "no prefer", header: http.Header{"Accept": {"application/fhir+json"}}, wantStatus: 400},
		{name: "lenient only", header: http.Header{"Accept": {"application/fhir+json"}, "Prefer": {"handling=lenient"}}, wantStatus: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := CheckKickoffHeaders(tc.header)
			if tc.wantStatus != 0 {
				if err == nil || err.Status != tc.wantStatus {
					t.Fatalf("got %v, want status %d", err, tc.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if p != tc.want {
				t.Errorf("preferences = %+v, want %+v", p, tc.want)
			}
		})
	}
}
