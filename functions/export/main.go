// Command export is a task of the export state machine: the ExportChunk step: streams one unit from its cursor into NDJSON files on S3 until the unit ends or the invocation's deadline nears, and returns the next cursor.
// Errors are returned unwrapped by type name (RetryableError,
// JobNotRunningError) so the state machine's Retry and Catch can match them.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleTask)
	lambda.Start(env.Deps.Steps.ExportChunk)
}
