// Command token is the Lambda behind API Gateway's token and discovery
// routes ([base]/auth/token, [base]/.well-known/smart-configuration):
// bulkfhir's SMART Backend Services authorization server, with clients and
// used jti values in the DynamoDB auth table and the access token key in
// Secrets Manager.
package main

import (
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/bulkfhir/bulkfhir/shared/apigw"

	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

func main() {
	cfg, awsCfg, keys := lambdaenv.MustSetupAuth(true)
	handler := lambdaenv.TokenServer(cfg, keys, dynamodb.NewFromConfig(awsCfg), lambdacontext.NewLogger())
	lambda.Start(apigw.NewGateway(handler).Invoke)
}
