// Command fail is a task of the export state machine: the failure step: marks the job failed with an OperationOutcome after the state machine caught an error.
// Errors are returned unwrapped by type name (RetryableError,
// JobNotRunningError) so the state machine's Retry and Catch can match them.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleTask)
	lambda.Start(env.Deps.Steps.Fail)
}
