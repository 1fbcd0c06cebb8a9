// Command dispatch starts queued exports when a running place is free: the
// target of the EventBridge rule on the export state machine's executions
// that ended (SUCCEEDED, FAILED, TIMED_OUT, ABORTED) and of a schedule
// every minute, which also reports the queue's and the oldest running
// job's figures for the stuck-export alarm.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleDispatch)
	lambda.Start(env.DispatchHandler())
}
