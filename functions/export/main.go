package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/lambdasource"
)

func main() {
	env := lambdaenv.MustLoad(lambdaenv.RoleTask)
	s3c := lambdaenv.S3(env.AWS)
	src, err := lambdasource.New(env.Config, env.AWS, s3c, env.Log)
	env.Must("startup", err)
	// The steps with their metrics around them (EMF lines).
	steps := lambdaenv.Steps(env.Config, lambdaenv.Jobs(env.Config, env.AWS), lambdaenv.Files(env.Config, s3c), src, env.Log)
	lambda.Start(steps.ExportChunk)
}
