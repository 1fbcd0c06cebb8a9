package sfnrunner_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

func TestFailHandler(t *testing.T) {
	eventBridge, err := os.ReadFile(filepath.Join("..", "..", "events", "task-fail-eventbridge.json"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		want    *export.FailInput
		wantErr bool
	}{
		{"state machine MarkFailed", `{"jobId":"j1","error":"States.TaskFailed","cause":"boom"}`, &export.FailInput{JobID: "j1", Error: "States.TaskFailed", Cause: "boom"}, false},
		{"EventBridge timed out", string(eventBridge), &export.FailInput{JobID: "example-job", Error: "States.Timeout"}, false},
		{"EventBridge aborted", `{"detail-type":"Step Functions Execution Status Change","detail":{"name":"j2","status":"ABORTED"}}`, &export.FailInput{JobID: "j2", Error: "execution ABORTED"}, false},
		{"EventBridge succeeded is ignored", `{"detail-type":"Step Functions Execution Status Change","detail":{"name":"j3","status":"SUCCEEDED"}}`, nil, false},
		{"not JSON", `[`, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *export.FailInput
			h := sfnrunner.FailHandler(func(_ context.Context, in export.FailInput) error { got = &in; return nil })
			err := h(context.Background(), []byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Errorf("fail called with %+v, want %+v", got, tc.want)
			}
		})
	}
}
