package fhir

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestParseInstant(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2020-01-01T00:00:00Z", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2020-01-01T02:00:00.123+02:00", time.Date(2020, 1, 1, 0, 0, 0, 123e6, time.UTC), true},
		{"2020-01-01T02:00:00 02:00", time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), true},
		{"2020-01-01T00:00:00", time.Time{}, false},
		{"2020-01-01", time.Time{}, false},
		{"2020-13-45T00:00:00Z", time.Time{}, false},
		{"0000-60-01T30:70:80+05:00", time.Time{}, false},
		{"2021-02-30T00:00:00Z", time.Time{}, false},
		{"", time.Time{}, false},
	}
	for _, tc := range tests {
		got, err := ParseInstant(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseInstant(%q) err = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && !got.Equal(tc.want) {
			t.Errorf("ParseInstant(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestCompartmentPatients(t *testing.T) {
	tests := []struct {
		name, typ, json string
		want            string
	}{
		{"observation subject and performer", "Observation", `{"subject":{"reference":"Patient/a"},"performer":[{"reference":"Practitioner/x"},{"reference":"Patient/b"}]}`, "a,b"},
		{"absolute and versioned", "Condition", `{"subject":{"reference":"https://h/fhir/Patient/a/_history/3"}}`, "a"},
		{"nested arrays", "CarePlan", `{"activity":[{"detail":{"performer":[{"reference":"Patient/p1"}]}},{"detail":{"performer":[{"reference":"Patient/p2"}]}}]}`, "p1,p2"},
		{"group members", "Group", `{"member":[{"entity":{"reference":"Patient/m1"}},{"entity":{"reference":"Device/d"}}]}`, "m1"},
		{"patient itself", "Patient", `{"id":"me","link":[{"other":{"reference":"Patient/other"}}]}`, "me,other"},
		{"not a patient reference", "Encounter", `{"subject":{"reference":"Group/g"},"participant":[{"individual":{"reference":"Patient/z"}}]}`, ""},
		{"type outside compartment", "Practitioner", `{"id":"p"}`, ""},
		{"look-alike type", "Observation", `{"subject":{"reference":"OtherPatient/a"}}`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			CompartmentPatients(tc.typ, []byte(tc.json), func(id string) bool { got = append(got, id); return true })
			if strings.Join(got, ",") != tc.want {
				t.Errorf("got %v, want %s", got, tc.want)
			}
		})
	}
}

func TestSubset(t *testing.T) {
	sel := NewElementSelector([][2]string{{"Patient", "name"}, {"", "status"}, {"Observation", "value[x]"}})
	tests := []struct {
		name, typ, in string
		wantKeys      string
	}{
		{"typed element", "Patient", `{"resourceType":"Patient","id":"1","name":[{"family":"X"}],"gender":"male","_gender":{"extension":[]}}`, "resourceType,id,name,meta"},
		{"bare element and mandatory", "Observation", `{"resourceType":"Observation","id":"1","meta":{"versionId":"2","tag":[{"code":"x"}]},"status":"final","code":{},"valueQuantity":{"value":1},"subject":{}}`, "resourceType,id,meta,status,code,valueQuantity"},
		{"meta with blanks is compacted", "Encounter", `{"resourceType":"Encounter","id":"1","meta":{ "versionId" : "2", "security": [ { "code" : "z" } ], "tag": [ {"code":"y"} ] },"status":"x","class":{}}`, "resourceType,id,meta,status,class"},
		{"primitive extension follows", "Encounter", `{"resourceType":"Encounter","id":"1","status":"x","_status":{"id":"s"},"class":{},"subject":{}}`, "resourceType,id,status,_status,class,meta"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := sel.Subset(tc.typ, []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			dec := json.NewDecoder(strings.NewReader(string(out)))
			dec.Token()
			for dec.More() {
				k, _ := dec.Token()
				keys = append(keys, k.(string))
				var skip json.RawMessage
				dec.Decode(&skip)
			}
			if strings.Join(keys, ",") != tc.wantKeys {
				t.Errorf("keys = %v, want %s (%s)", keys, tc.wantKeys, out)
			}
			if !json.Valid(out) || strings.Contains(strings.SplitN(string(out), `"status"`, 2)[0], " ") {
				t.Errorf("not compact JSON: %s", out)
			}
			if strings.Count(string(out), SubsettedCode) != 1 {
				t.Errorf("want one SUBSETTED tag: %s", out)
			}
			again, _ := sel.Subset(tc.typ, out)
			if string(again) != string(out) {
				t.Errorf("subsetting twice changed the resource:\n%s\n%s", out, again)
			}
		})
	}
	if NewElementSelector([][2]string{{"Patient", "name"}}).Applies("Observation") {
		t.Error("a Patient-only selector applies to Observation")
	}
}
