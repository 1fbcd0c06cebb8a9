// Command expire is the retention sweep, run every few minutes by an
// EventBridge schedule: it deletes the files and job records of exports
// whose Expires has passed (retention.Sweep), so nothing outlives its
// manifest's Expires by more than a sweep interval.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	log := lambdacontext.NewLogger()
	cfg, err := lambdaenv.LoadSweep(os.Getenv)
	if err != nil {
		log.Error("startup", "err", err)
		os.Exit(1)
	}
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Error("startup: AWS config", "err", err)
		os.Exit(1)
	}
	lambda.Start(lambdaenv.SweepHandler(cfg, awsCfg, log))
}
