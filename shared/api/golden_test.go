package api_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with the current responses")

// TestGoldenShapes: the wire shapes clients parse (the manifest, the
// kick-off answer, OperationOutcomes of each kind, the status of a failed
// job) match the reviewed files in testdata/. Regenerate with
// go test ./shared/api -run TestGoldenShapes -update and review the diff.
func TestGoldenShapes(t *testing.T) {
	tests := []struct {
		file                  string
		method, target, token string
		header                map[string]string
		want                  int
	}{
		{"manifest.json", "GET", "/fhir/bulkstatus/done", "c1", nil, 200},
		{"kickoff-accepted.json", "GET", "/fhir/$export?_type=Patient", "c1", async, 202},
		{"outcome-not-found.json", "GET", "/fhir/bulkstatus/nope", "c1", nil, 404},
		{"outcome-unauthorized.json", "GET", "/fhir/$export", "", async, 401},
		{"outcome-bad-parameter.json", "GET", "/fhir/$export?_outputFormat=text/csv", "c1", async, 400},
		{"outcome-method-not-allowed.json", "PUT", "/fhir/$export", "c1", async, 405},
		{"outcome-failed-job.json", "GET", "/fhir/bulkstatus/failed", "c1", nil, 502},
	}
	w := newWorld(t)
	// Links carry an expiry counted from now; job ids are random.
	volatile := regexp.MustCompile(`exp=\d+|bulkstatus/[0-9a-f-]{20,}`)
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			r := w.do(t, tc.method, tc.target, tc.token, tc.header, "")
			if r.status != tc.want {
				t.Fatalf("%s %s → %d, want %d: %s", tc.method, tc.target, r.status, tc.want, r.body)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, r.body, "", "  "); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, r.body)
			}
			got := volatile.ReplaceAllFunc(pretty.Bytes(), func(m []byte) []byte {
				if bytes.HasPrefix(m, []byte("exp=")) {
					return []byte("exp=EXPIRY")
				}
				return []byte("bulkstatus/JOB")
			})
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.file)
			if *update {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s changed (run with -update and review the diff):\ngot:\n%s\nwant:\n%s", path, got, want)
			}
		})
	}
}
