// Command authorizer is API Gateway's Lambda authorizer (HTTP API or REST API TOKEN) for the export
// routes: it admits requests carrying an access token bulkfhir signed
// (the key from Secrets Manager, read once per container).
package main

import (
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/bulkfhir/bulkfhir/shared/apigw"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	_, _, keys := lambdaenv.MustSetupAuth(false)
	lambda.Start(apigw.Authorizers(keys))
}
