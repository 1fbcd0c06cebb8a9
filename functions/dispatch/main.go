// Command dispatch starts queued exports when a running place is free: the
// target of the EventBridge rule on the export state machine's executions
// that ended (SUCCEEDED, FAILED, TIMED_OUT, ABORTED) and of a schedule
// every minute, which also reports the queue's and the oldest running
// job's figures for the stuck-export alarm.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

func main() {
	env := lambdaenv.MustLoad(lambdaenv.RoleDispatch)
	cfg := env.Config
	jobs := lambdaenv.Jobs(cfg, env.AWS)
	runner := sfnrunner.New(sfn.NewFromConfig(env.AWS), cfg.StateMachineARN)
	// Dispatching never reads the source.
	svc := export.NewService(jobs, lambdaenv.Files(cfg, lambdaenv.S3(env.AWS)), runner, lambdaenv.NoSource{}, cfg.Export(), env.Log)
	rec := lambdaenv.Metrics(cfg)
	lambdaenv.Observe(svc, jobs, cfg, rec)
	lambda.Start(lambdaenv.DispatchHandler(svc, rec, env.Log))
}
