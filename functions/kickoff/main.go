// Command kickoff is the Lambda behind API Gateway's kick-off and metadata
// routes ([base]/$export, Patient/$export, Group/{id}/$export, metadata,
// Group read and search): the shared HTTP handler, with the job store on
// DynamoDB, files on S3 and the Step Functions runner.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleAPI)
	lambda.Start(env.APIHandler())
}
