package main

import (
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
)

func main() {
	_, _, keys := lambdaauth.MustSetup(false)
	lambda.Start(apigw.Authorizers(keys))
}
