package main

import (
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/dynamoauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
)

func main() {
	cfg, awsCfg, keys := lambdaauth.MustSetup(true)
	clients := dynamoauth.New(dynamodb.NewFromConfig(awsCfg), cfg.AuthTable)
	handler := lambdaauth.TokenServer(cfg, keys, clients, lambdacontext.NewLogger())
	lambda.Start(apigw.NewGateway(handler).Invoke)
}
