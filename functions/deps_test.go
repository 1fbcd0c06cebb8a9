package functions_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/bulkfhir/bulkfhir/"

// forbidden lists, per binary, the bulkfhir packages it must not link: each
// function links only the adapters it uses, and nothing ships the test
// servers, the emulator launchers or the bench harness.
var forbidden = map[string][]string{
	"./functions/authorizer": {"shared/dynamostore", "shared/s3store", "shared/fhirsource", "shared/s3source", "shared/ndjsonsource", "shared/sfnrunner", "shared/lambdaenv", "shared/lambdasource"},
	"./functions/token":      {"shared/dynamostore", "shared/s3store", "shared/fhirsource", "shared/s3source", "shared/ndjsonsource", "shared/sfnrunner", "shared/lambdaenv", "shared/lambdasource"},
	"./functions/plan":       {"shared/api", "shared/apigw", "shared/smartauth", "shared/lambdaauth", "shared/dynamoauth", "shared/sfnrunner"},
	"./functions/export":     {"shared/api", "shared/apigw", "shared/smartauth", "shared/lambdaauth", "shared/dynamoauth", "shared/sfnrunner"},
	"./functions/finalize":   {"shared/api", "shared/apigw", "shared/smartauth", "shared/lambdaauth", "shared/dynamoauth", "shared/sfnrunner", "shared/fhirsource", "shared/smartclient", "shared/s3source", "shared/ndjsonsource", "shared/lambdasource"},
	"./functions/fail":       {"shared/api", "shared/apigw", "shared/smartauth", "shared/lambdaauth", "shared/dynamoauth", "shared/fhirsource", "shared/smartclient", "shared/s3source", "shared/ndjsonsource", "shared/lambdasource"},
	"./functions/status":     {"shared/dynamoauth", "shared/fhirsource", "shared/smartclient", "shared/s3source", "shared/ndjsonsource", "shared/lambdasource"},
	"./functions/kickoff":    {"shared/dynamoauth"},
	"./functions/expire":     {"shared/api", "shared/apigw", "shared/smartauth", "shared/lambdaauth", "shared/dynamoauth", "shared/sfnrunner", "shared/fhirsource", "shared/smartclient", "shared/s3source", "shared/ndjsonsource", "shared/lambdasource"},
	"./functions/dispatch":   {"shared/api", "shared/apigw", "shared/smartauth", "shared/lambdaauth", "shared/dynamoauth", "shared/fhirsource", "shared/smartclient", "shared/s3source", "shared/ndjsonsource", "shared/lambdasource"},
	"./cmd/bulkfhir":         {"shared/lambdaenv", "shared/apigw", "shared/sfnrunner", "shared/dynamostore"},
}

// everywhere is forbidden in every binary.
var everywhere = []string{"shared/awstest", "shared/fhirtest", "shared/smartauthtest", "shared/exporttest", "shared/bench", "cmd/bulkfhir/internal/bench"}

// TestBinariesLinkOnlyWhatTheyUse checks each binary's package graph
// (go list -deps) against its forbidden list.
func TestBinariesLinkOnlyWhatTheyUse(t *testing.T) {
	root := repoRoot(t)
	for pkg, deny := range forbidden {
		t.Run(strings.TrimPrefix(pkg, "./"), func(t *testing.T) {
			t.Parallel()
			deps := listDeps(t, root, pkg)
			if len(deps) == 0 {
				t.Fatalf("go list -deps %s listed no bulkfhir package", pkg)
			}
			for _, p := range append(deny, everywhere...) {
				if deps[module+p] {
					t.Errorf("%s links %s", pkg, p)
				}
			}
		})
	}
}

// TestDepsCheckCanFail: the check sees a package a binary does link, so a
// forbidden import added to a main.go would be reported.
func TestDepsCheckCanFail(t *testing.T) {
	root := repoRoot(t)
	for pkg, want := range map[string]string{
		"./functions/kickoff":  "shared/fhirsource",
		"./functions/finalize": "shared/dynamostore",
		"./functions/token":    "shared/dynamoauth",
		"./cmd/bulkfhir":       "shared/boltstore",
	} {
		if !listDeps(t, root, pkg)[module+want] {
			t.Errorf("go list -deps %s does not show %s, which it links: the check could not fail", pkg, want)
		}
	}
}

func listDeps(t *testing.T, root, pkg string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", pkg)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	deps := map[string]bool{}
	for _, l := range strings.Fields(string(out)) {
		if strings.HasPrefix(l, module) {
			deps[l] = true
		}
	}
	return deps
}

func repoRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}
