package functions_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

// failedWithOutcome checks a job ended failed with an OperationOutcome.
func failedWithOutcome(t *testing.T, job string) {
	t.Helper()
	r := waitDone(t, job)
	if r.StatusCode != http.StatusInternalServerError || !strings.Contains(r.Body, `"OperationOutcome"`) {
		t.Fatalf("job %s: %d %s, want 500 with an OperationOutcome", job, r.StatusCode, r.Body)
	}
}

// TestLimitsCrossedInAnExportFailTheJob: a chunk result over 256 KiB (the
// state limit, counted in the child execution) and one over 6 MB (the
// Lambda response limit) each fail the job, and the harness reports the
// limit: the checks fire inside a real export, not only on their own.
func TestLimitsCrossedInAnExportFailTheJob(t *testing.T) {
	cl := need(t)
	for _, tc := range []struct {
		name  string
		bloat int
		want  string
	}{
		{"state over 256 KiB", 300 << 10, "is over 262144"},
		{"Lambda response over 6 MB", 7 << 20, "Lambda limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl.takeCrossed()
			cl.mu.Lock()
			cl.bloat["Patient.0000"] = tc.bloat
			cl.mu.Unlock()
			defer func() { cl.mu.Lock(); delete(cl.bloat, "Patient.0000"); cl.mu.Unlock() }()
			failedWithOutcome(t, kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient", ""))
			crossed := strings.Join(cl.takeCrossed(), "; ")
			if !strings.Contains(crossed, tc.want) {
				t.Errorf("limits crossed: %q, want one saying %q", crossed, tc.want)
			}
		})
	}
}

// TestEveryExecutionEndsItsJob: an execution that ends without reaching
// MarkFailed (aborted by someone other than a cancel, or timed out by the
// definition's TimeoutSeconds) still marks its job failed, through the
// EventBridge rule's call of the fail function.
func TestEveryExecutionEndsItsJob(t *testing.T) {
	cl := need(t)
	hold := func(t *testing.T) {
		gate := make(chan struct{})
		cl.mu.Lock()
		cl.block["Patient.0000"] = gate
		cl.mu.Unlock()
		t.Cleanup(func() { cl.mu.Lock(); delete(cl.block, "Patient.0000"); cl.mu.Unlock(); close(gate) })
	}
	exporting := func(t *testing.T, job string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			if j, err := cl.api.Jobs.Get(context.Background(), job); err == nil && j.Plan != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("job %s never started exporting", job)
	}
	t.Run("aborted", func(t *testing.T) {
		hold(t)
		job := kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient", "")
		exporting(t, job)
		// An operator stops the execution; the job itself was not cancelled.
		runner := sfnrunner.New(sfn.NewFromConfig(cl.awsCfg), stateMachine)
		if err := runner.Stop(context.Background(), job); err != nil {
			t.Fatal(err)
		}
		failedWithOutcome(t, job)
		if e := cl.execution(job); e == nil || e.status != "ABORTED" {
			t.Errorf("execution = %+v, want ABORTED", e)
		}
	})
	t.Run("timed out", func(t *testing.T) {
		if err := cl.useDefinition(maxConcurrent, 2); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.useDefinition(maxConcurrent, 3600) })
		hold(t)
		job := kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient", "")
		failedWithOutcome(t, job)
		if e := cl.execution(job); e == nil || e.status != "TIMED_OUT" {
			t.Errorf("execution = %+v, want TIMED_OUT", e)
		}
		if j, _ := cl.api.Jobs.Get(context.Background(), job); j.Status != export.StatusFailed {
			t.Errorf("job status = %s", j.Status)
		}
	})
}

// TestItemLimitFires: the DynamoDB endpoint the functions use refuses an
// item over 400 KB and reports the limit; one under it is stored.
func TestItemLimitFires(t *testing.T) {
	cl := need(t)
	cl.takeCrossed()
	db := dynamodb.NewFromConfig(cl.awsCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	item := func(n int) map[string]types.AttributeValue {
		return map[string]types.AttributeValue{
			"pk": &types.AttributeValueMemberS{Value: "JOB#limit-test"}, "sk": &types.AttributeValueMemberS{Value: "JOB"},
			"blob": &types.AttributeValueMemberS{Value: strings.Repeat("x", n)},
		}
	}
	_, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item(dynamostore.MaxItemBytes)})
	crossed := strings.Join(cl.takeCrossed(), "; ")
	if err == nil || !strings.Contains(crossed, "DynamoDB item") {
		t.Errorf("PutItem over 400 KB = %v, crossed %q; want refused and reported", err, crossed)
	}
	if _, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: item(dynamostore.MaxItemBytes - 100)}); err != nil {
		t.Errorf("PutItem under 400 KB = %v", err)
	}
	if c := cl.takeCrossed(); len(c) != 0 {
		t.Errorf("crossed %v for an item under the limit", c)
	}
}
