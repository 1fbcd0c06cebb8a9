// Package sfnrunner is the Runner on AWS Step Functions: a job is one
// execution of the export state machine, named by the job id, so starting
// a job twice is harmless and stopping needs no lookup.
package sfnrunner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// API is the part of the Step Functions client the runner uses.
type API interface {
	StartExecution(ctx context.Context, in *sfn.StartExecutionInput, opts ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error)
	StopExecution(ctx context.Context, in *sfn.StopExecutionInput, opts ...func(*sfn.Options)) (*sfn.StopExecutionOutput, error)
}

// Runner starts and stops executions of one state machine.
type Runner struct {
	api          API
	stateMachine string
}

var _ export.Runner = (*Runner)(nil)

// New returns a runner for the state machine ARN.
func New(api API, stateMachineARN string) *Runner {
	return &Runner{api: api, stateMachine: stateMachineARN}
}

// Start implements export.Runner. The execution's input is the JobRef the
// state machine's first step takes.
func (r *Runner) Start(ctx context.Context, jobID string) error {
	input, _ := json.Marshal(export.JobRef{JobID: jobID})
	_, err := r.api.StartExecution(ctx, &sfn.StartExecutionInput{
		StateMachineArn: aws.String(r.stateMachine),
		Name:            aws.String(jobID),
		Input:           aws.String(string(input)),
	})
	var exists *types.ExecutionAlreadyExists
	if errors.As(err, &exists) {
		return nil // already started (a retried kick-off)
	}
	if err != nil {
		return fmt.Errorf("start execution %s: %w", jobID, err)
	}
	return nil
}

// ExecutionARN is the ARN of the job's execution.
func ExecutionARN(stateMachineARN, jobID string) string {
	return strings.Replace(stateMachineARN, ":stateMachine:", ":execution:", 1) + ":" + jobID
}

// Stop implements export.Runner.
func (r *Runner) Stop(ctx context.Context, jobID string) error {
	_, err := r.api.StopExecution(ctx, &sfn.StopExecutionInput{
		ExecutionArn: aws.String(ExecutionARN(r.stateMachine, jobID)),
		Error:        aws.String("Cancelled"),
		Cause:        aws.String("the client cancelled the export"),
	})
	var missing *types.ExecutionDoesNotExist
	if errors.As(err, &missing) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stop execution %s: %w", jobID, err)
	}
	return nil
}

// statusChange is the part of an EventBridge event the fail function reads.
type statusChange struct {
	DetailType string `json:"detail-type"`
	Detail     struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Error  string `json:"error"`
		Cause  string `json:"cause"`
	} `json:"detail"`
}

// FailHandler is the fail function's handler. It takes the state machine's
// MarkFailed input ({"jobId", "error", "cause"}) and, from the EventBridge
// rule on the state machine's executions, status changes to FAILED,
// TIMED_OUT or ABORTED: the execution is named by the job id, so a job
// whose execution ended without reaching MarkFailed (a timeout, an
// uncatchable limit, an abort other than a cancel) is marked failed too.
// A job that is no longer live (a cancel aborted its execution) is left as
// it is.
func FailHandler(fail func(context.Context, export.FailInput) error) func(context.Context, json.RawMessage) error {
	return func(ctx context.Context, raw json.RawMessage) error {
		var ev statusChange
		if err := json.Unmarshal(raw, &ev); err == nil && ev.DetailType == settings.StatusChangeDetailType {
			switch ev.Detail.Status {
			case "FAILED", "TIMED_OUT", "ABORTED":
			default:
				return nil
			}
			errName := ev.Detail.Error
			if errName == "" {
				errName = "execution " + ev.Detail.Status
			}
			return fail(ctx, export.FailInput{JobID: ev.Detail.Name, Error: errName, Cause: ev.Detail.Cause})
		}
		var in export.FailInput
		if err := json.Unmarshal(raw, &in); err != nil {
			return fmt.Errorf("fail: decode input: %w", err)
		}
		return fail(ctx, in)
	}
}
