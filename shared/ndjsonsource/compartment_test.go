package ndjsonsource

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// TestMayReferenceNeverRejectsAMember: the shortcut before the compartment
// check says no only for lines the full check rejects, on every line of a
// generated dataset and on crafted references.
func TestMayReferenceNeverRejectsAMember(t *testing.T) {
	patients := map[string]bool{"p1": true, "x-2": true}
	for _, c := range []struct {
		name, line string
		want       bool
	}{
		{"relative", `{"resourceType":"Observation","subject":{"reference":"Patient/p1"}}`, true},
		{"absolute", `{"resourceType":"Observation","subject":{"reference":"https://h/fhir/Patient/x-2"}}`, true},
		{"versioned", `{"resourceType":"Observation","subject":{"reference":"Patient/p1/_history/3"}}`, true},
		{"escaped slash", `{"resourceType":"Observation","subject":{"reference":"Patient\/p1"}}`, true},
		{"another patient", `{"resourceType":"Observation","subject":{"reference":"Patient/p10"}}`, false},
		{"prefix of a member", `{"resourceType":"Observation","subject":{"reference":"Patient/p"}}`, false},
		{"no reference", `{"resourceType":"Observation","id":"o"}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := mayReference([]byte(c.line), patients); got != c.want {
				t.Errorf("mayReference = %v, want %v", got, c.want)
			}
		})
	}

	data := t.TempDir()
	if _, err := sampledata.Generate(data, sampledata.Options{Patients: 30, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	members := map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	checked, rejected := 0, 0
	for pass := 0; pass < 2; pass++ {
		for _, name := range files {
			f, err := os.Open(name)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			for sc.Scan() {
				line := sc.Bytes()
				h, ok := fhir.Peek(line)
				if !ok {
					continue
				}
				if pass == 0 { // every third patient is a member
					if h.ResourceType == "Patient" && len(members) < 10 && checked%3 == 0 {
						members[h.ID] = true
					}
					checked++
					continue
				}
				in := false
				fhir.CompartmentPatients(h.ResourceType, line, func(id string) bool { in = members[id]; return !in })
				if h.ResourceType == "Patient" {
					continue
				}
				may := mayReference(line, members)
				if in && !may {
					t.Fatalf("a %s in the members' compartment was rejected: %.200s", h.ResourceType, line)
				}
				if !may {
					rejected++
				}
			}
			f.Close()
		}
	}
	if len(members) == 0 || rejected == 0 {
		t.Fatalf("%d members, %d lines rejected by the shortcut: the test checks nothing", len(members), rejected)
	}
}
