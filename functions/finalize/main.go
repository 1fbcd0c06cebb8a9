// Command finalize is a task of the export state machine: the Finalize step: checks every unit is done and completes the job (the retention clock starts).
// Errors are returned unwrapped by type name (RetryableError,
// JobNotRunningError) so the state machine's Retry and Catch can match them.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleTask)
	lambda.Start(env.Deps.Steps.Finalize)
}
