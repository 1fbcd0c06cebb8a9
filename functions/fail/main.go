package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

func main() {
	env := lambdaenv.MustLoad(lambdaenv.RoleTask)
	// Fail never reads the source: no source client, no credentials.
	// The steps with their metrics around them (EMF lines).
	steps := lambdaenv.Steps(env.Config, lambdaenv.Jobs(env.Config, env.AWS), lambdaenv.Files(env.Config, lambdaenv.S3(env.AWS)), lambdaenv.NoSource{}, env.Log)
	lambda.Start(sfnrunner.FailHandler(steps.Fail))
}
