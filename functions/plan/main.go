// Command plan is a task of the export state machine: the Plan step: turns a job's request into work units and starts the job.
// Errors are returned unwrapped by type name (RetryableError,
// JobNotRunningError) so the state machine's Retry and Catch can match them.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleTask)
	lambda.Start(env.Deps.Steps.Plan)
}
