// Command fail is a task of the export state machine and the target of the
// EventBridge rule on its executions' status changes: it marks the job
// failed with an OperationOutcome after the state machine caught an error,
// or after the execution failed, timed out or was aborted without reaching
// that state. Errors are returned unwrapped by type name (RetryableError,
// JobNotRunningError) so the state machine's Retry and Catch can match them.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleTask)
	lambda.Start(sfnrunner.FailHandler(env.Deps.Steps.Fail))
}
