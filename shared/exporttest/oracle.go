package exporttest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Oracles for end-to-end data-integrity checks, independent of the export
// code: they read the source files and compare JSON values.

// ReadResources reads every *.ndjson file in dir into "Type/id" → line. It
// fails the test on a line that is not a JSON resource.
func ReadResources(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			var head struct{ ResourceType, ID string }
			if err := json.Unmarshal(sc.Bytes(), &head); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			out[head.ResourceType+"/"+head.ID] = append([]byte(nil), sc.Bytes()...)
		}
		fh.Close()
	}
	return out
}

// ExpectedCompartment is what a Patient or Group export of the selected
// patients must return: those Patients, and every resource whose JSON
// references one of them (Practitioner, Organization and Location are not
// in the Patient compartment).
func ExpectedCompartment(src map[string][]byte, patients map[string]bool) map[string][]byte {
	want := map[string][]byte{}
	for key, line := range src {
		typ, id, _ := strings.Cut(key, "/")
		switch typ {
		case "Patient":
			if patients[id] {
				want[key] = line
			}
			continue
		case "Practitioner", "Organization", "Location":
			continue
		}
		for p := range patients {
			if bytes.Contains(line, []byte(`"reference":"Patient/`+p+`"`)) {
				want[key] = line
				break
			}
		}
	}
	return want
}

// GroupMembers reads the active members of a Group in src.
func GroupMembers(t testing.TB, src map[string][]byte, id string) map[string]bool {
	t.Helper()
	var g struct {
		Member []struct {
			Entity   struct{ Reference string } `json:"entity"`
			Inactive bool                       `json:"inactive"`
		} `json:"member"`
	}
	if err := json.Unmarshal(src["Group/"+id], &g); err != nil {
		t.Fatalf("Group/%s: %v", id, err)
	}
	out := map[string]bool{}
	for _, m := range g.Member {
		if !m.Inactive {
			out[strings.TrimPrefix(m.Entity.Reference, "Patient/")] = true
		}
	}
	return out
}

// JSONEqual reports whether a and b are the same JSON value.
func JSONEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// SameSet asserts got holds exactly the keys of want, each JSON-equal.
func SameSet(t testing.TB, got, want map[string][]byte) {
	t.Helper()
	missing, extra, differ := 0, 0, 0
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			if missing++; missing <= 5 {
				t.Errorf("missing %s", k)
			}
			continue
		}
		if !JSONEqual(t, g, w) {
			if differ++; differ <= 5 {
				t.Errorf("%s differs from the source", k)
			}
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			if extra++; extra <= 5 {
				t.Errorf("unexpected %s", k)
			}
		}
	}
	if missing+extra+differ > 0 {
		t.Errorf("got %d resources, want %d: %d missing, %d unexpected, %d different", len(got), len(want), missing, extra, differ)
	}
}
