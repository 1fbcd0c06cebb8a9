package sfnrunner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/smithy-go"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

const stateMachine = "arn:aws:states:us-east-1:123456789012:stateMachine:bulkfhir-export"

// fakeSFN speaks the Step Functions JSON protocol (awsJson1_0) for
// StartExecution and StopExecution, as strictly as the service: execution
// names of 1–80 characters from its alphabet, inputs of at most 256 KiB
// of JSON, an unknown state machine, a name reused with another input or
// after the execution ended (ExecutionAlreadyExists), and a stop of an
// unknown execution (ExecutionDoesNotExist).
type fakeSFN struct {
	mu         sync.Mutex
	executions map[string]*execution // by ARN
	calls      []call
	failNext   int // answer the next requests 500
}

type execution struct {
	input   string
	running bool
	err     string
	cause   string
}

type call struct {
	op   string
	body map[string]any
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,80}$`)

func (f *fakeSFN) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	target := r.Header.Get("X-Amz-Target")
	op, ok := strings.CutPrefix(target, "AWSStepFunctions.")
	if r.Method != http.MethodPost || !ok || r.Header.Get("Content-Type") != "application/x-amz-json-1.0" {
		fail(w, http.StatusBadRequest, "UnknownOperationException", "bad request to "+target)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		fail(w, http.StatusBadRequest, "MissingAuthenticationTokenException", "unsigned request")
		return
	}
	var body map[string]any
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		fail(w, http.StatusBadRequest, "SerializationException", err.Error())
		return
	}
	f.calls = append(f.calls, call{op, body})
	if f.failNext > 0 {
		f.failNext--
		fail(w, http.StatusInternalServerError, "InternalFailure", "try again")
		return
	}
	str := func(k string) string { s, _ := body[k].(string); return s }
	switch op {
	case "StartExecution":
		if str("stateMachineArn") != stateMachine {
			fail(w, http.StatusBadRequest, "StateMachineDoesNotExist", "State Machine Does Not Exist: '"+str("stateMachineArn")+"'")
			return
		}
		name, input := str("name"), str("input")
		if !validName.MatchString(name) {
			fail(w, http.StatusBadRequest, "InvalidName", "Invalid Name: '"+name+"'")
			return
		}
		if len(input) > 256<<10 || !json.Valid([]byte(input)) {
			fail(w, http.StatusBadRequest, "InvalidExecutionInput", "Invalid State Machine Execution Input")
			return
		}
		arn := sfnrunner.ExecutionARN(stateMachine, name)
		if e, ok := f.executions[arn]; ok && !(e.running && e.input == input) {
			fail(w, http.StatusBadRequest, "ExecutionAlreadyExists", "Execution Already Exists: '"+arn+"'")
			return
		}
		if _, ok := f.executions[arn]; !ok { // the same call again while it runs is idempotent
			f.executions[arn] = &execution{input: input, running: true}
		}
		json.NewEncoder(w).Encode(map[string]any{"executionArn": arn, "startDate": float64(time.Now().Unix())})
	case "StopExecution":
		e, ok := f.executions[str("executionArn")]
		if !ok {
			fail(w, http.StatusBadRequest, "ExecutionDoesNotExist", "Execution Does Not Exist: '"+str("executionArn")+"'")
			return
		}
		e.running, e.err, e.cause = false, str("error"), str("cause")
		json.NewEncoder(w).Encode(map[string]any{"stopDate": float64(time.Now().Unix())})
	default:
		fail(w, http.StatusBadRequest, "UnknownOperationException", op)
	}
}

func fail(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	w.Header().Set("X-Amzn-Errortype", typ)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"__type": "com.amazonaws.swf.service.v2.model#" + typ, "message": msg})
}

// newRunner is a runner whose SDK client talks to a fake Step Functions
// over HTTP.
func newRunner(t *testing.T, arn string) (*sfnrunner.Runner, *fakeSFN) {
	t.Helper()
	f := &fakeSFN{executions: map[string]*execution{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	client := sfn.New(sfn.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		HTTPClient:   srv.Client(),
		Retryer:      aws.NopRetryer{},
	})
	return sfnrunner.New(client, arn), f
}

func TestStartAndStop(t *testing.T) {
	ctx := context.Background()
	r, f := newRunner(t, stateMachine)
	if err := r.Start(ctx, "job-1"); err != nil {
		t.Fatal(err)
	}
	arn := sfnrunner.ExecutionARN(stateMachine, "job-1")
	e := f.executions[arn]
	if e == nil || !e.running {
		t.Fatalf("no running execution %s: %v", arn, f.executions)
	}
	var in export.JobRef
	if err := json.Unmarshal([]byte(e.input), &in); err != nil || in.JobID != "job-1" {
		t.Errorf("execution input %s, want the JobRef of job-1", e.input)
	}
	// A retried kick-off starts the same execution again: no error, one
	// execution.
	if err := r.Start(ctx, "job-1"); err != nil {
		t.Errorf("second Start = %v, want nil", err)
	}
	if len(f.executions) != 1 {
		t.Errorf("%d executions, want 1", len(f.executions))
	}
	if err := r.Stop(ctx, "job-1"); err != nil {
		t.Fatal(err)
	}
	if e.running || e.err != "Cancelled" || e.cause == "" {
		t.Errorf("after Stop the execution is running=%v error=%q cause=%q, want stopped with Cancelled and a cause", e.running, e.err, e.cause)
	}
	// Starting a job whose execution ended is ExecutionAlreadyExists,
	// which the runner takes as already started.
	if err := r.Start(ctx, "job-1"); err != nil {
		t.Errorf("Start after the execution ended = %v, want nil", err)
	}
	if last := f.calls[len(f.calls)-1]; last.op != "StartExecution" {
		t.Errorf("last call %s, want StartExecution", last.op)
	}
	// Stopping a job that never ran is not an error.
	if err := r.Stop(ctx, "never-started"); err != nil {
		t.Errorf("Stop of an unknown execution = %v, want nil", err)
	}
}

// TestErrorsAreReturned: the service's other answers reach the caller,
// wrapped with the job, as the API error the SDK decoded.
func TestErrorsAreReturned(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		arn      string
		job      string
		failNext int
		op       func(*sfnrunner.Runner, context.Context, string) error
		wantCode string
	}{
		{"unknown state machine", stateMachine + "-gone", "job-1", 0, (*sfnrunner.Runner).Start, "StateMachineDoesNotExist"},
		{"job id the service refuses as a name", stateMachine, strings.Repeat("j", 81), 0, (*sfnrunner.Runner).Start, "InvalidName"},
		{"service failure on start", stateMachine, "job-1", 1, (*sfnrunner.Runner).Start, "InternalFailure"},
		{"service failure on stop", stateMachine, "job-1", 1, (*sfnrunner.Runner).Stop, "InternalFailure"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, f := newRunner(t, tc.arn)
			f.failNext = tc.failNext
			err := tc.op(r, ctx, tc.job)
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tc.wantCode {
				t.Fatalf("err = %v, want the API error %s", err, tc.wantCode)
			}
			if !strings.Contains(err.Error(), tc.job) {
				t.Errorf("error %q does not name the job", err)
			}
		})
	}
}

func TestExecutionARN(t *testing.T) {
	tests := []struct{ machine, job, want string }{
		{stateMachine, "abc", "arn:aws:states:us-east-1:123456789012:execution:bulkfhir-export:abc"},
		{"arn:aws-cn:states:cn-north-1:1:stateMachine:m", "j", "arn:aws-cn:states:cn-north-1:1:execution:m:j"},
	}
	for _, tc := range tests {
		if got := sfnrunner.ExecutionARN(tc.machine, tc.job); got != tc.want {
			t.Errorf("ExecutionARN(%q, %q) = %q, want %q", tc.machine, tc.job, got, tc.want)
		}
	}
}

// TestFakeIsStrict: the fake refuses what the service refuses, so the
// runner's tests cannot pass on a request the service would reject.
func TestFakeIsStrict(t *testing.T) {
	ctx := context.Background()
	f := &fakeSFN{executions: map[string]*execution{}}
	client := sfn.New(sfn.Options{Region: "us-east-1", BaseEndpoint: aws.String(serverURL(t, f)),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""), Retryer: aws.NopRetryer{}})
	tests := []struct {
		name string
		in   *sfn.StartExecutionInput
		want string
	}{
		{"name with a space", &sfn.StartExecutionInput{StateMachineArn: aws.String(stateMachine), Name: aws.String("a b"), Input: aws.String("{}")}, "InvalidName"},
		{"input over 256 KiB", &sfn.StartExecutionInput{StateMachineArn: aws.String(stateMachine), Name: aws.String("big"),
			Input: aws.String(fmt.Sprintf(`{"x":%q}`, strings.Repeat("x", 256<<10)))}, "InvalidExecutionInput"},
		{"input not JSON", &sfn.StartExecutionInput{StateMachineArn: aws.String(stateMachine), Name: aws.String("bad"), Input: aws.String("{")}, "InvalidExecutionInput"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.StartExecution(ctx, tc.in)
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tc.want {
				t.Errorf("err = %v, want %s", err, tc.want)
			}
		})
	}
	// The same name with another input while it runs.
	if _, err := client.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(stateMachine), Name: aws.String("n"), Input: aws.String(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	_, err := client.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(stateMachine), Name: aws.String("n"), Input: aws.String(`{"a":2}`)})
	var apiErr smithy.APIError
	if !errors.As(err, &apiErr) || apiErr.ErrorCode() != "ExecutionAlreadyExists" {
		t.Errorf("same name, other input: err = %v, want ExecutionAlreadyExists", err)
	}
}

func serverURL(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
