// Command status is the Lambda behind API Gateway's status route (GET for
// progress and the manifest with presigned links, DELETE to cancel): the
// shared HTTP handler on the same adapters as kickoff.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	env := lambdaenv.MustSetup(lambdaenv.RoleStatus)
	lambda.Start(env.APIHandler())
}
