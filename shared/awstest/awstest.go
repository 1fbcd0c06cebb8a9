// Package awstest starts the AWS-protocol emulators (DynamoDB Local,
// MinIO) from the project's own caches (make tools installs them:
// infra/node_modules, .cache/bin) and runs integration tests on them. The
// tests and bulkfhir-bench --aws talk to them over sockets with the real
// SDK clients. When an emulator is missing, tests skip, except under
// CI=true, where they fail: a green run that ran nothing is a defect. No
// shipped binary links it.
package awstest

import (
	"errors"
	"fmt"
	"os"
	"testing"
)

// Handle decides what a test does with an emulator start error: nothing when
// it started, skip when it is missing outside CI, fail otherwise.
func Handle(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrMissing) && os.Getenv("CI") != "true" {
		tb.Skip(err)
	}
	tb.Fatal(err)
}

// Main runs a test binary's tests with the named emulators started and
// their endpoints in AWS_ENDPOINT_URL_<SERVICE>; start failures are kept
// in *startErr for Handle. Use it as TestMain's body:
//
//	func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "S3")) }
func Main(m *testing.M, startErr *error, services ...string) int {
	var running []*Emulator
	for _, svc := range services {
		var e *Emulator
		var err error
		switch svc {
		case "S3":
			e, err = StartMinIO()
		case "DYNAMODB":
			e, err = StartDynamoDB()
		default:
			err = fmt.Errorf("awstest: no emulator for %s", svc)
		}
		if err != nil {
			*startErr = err
			break
		}
		running = append(running, e)
		os.Setenv("AWS_ENDPOINT_URL_"+svc, e.Endpoint)
	}
	code := m.Run()
	for _, e := range running {
		e.Stop()
	}
	return code
}
