package main

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/lambdasource"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

func main() {
	env := lambdaenv.MustLoad(lambdaenv.RoleAPI)
	cfg := env.Config
	s3c := lambdaenv.S3(env.AWS)
	src, err := lambdasource.New(cfg, env.AWS, s3c, env.Log)
	env.Must("startup", err)
	keys, err := lambdaauth.APIKeys(context.Background(), env.AWS, cfg.Auth, cfg.TokenSecretARN)
	env.Must("startup", err)
	runner := sfnrunner.New(sfn.NewFromConfig(env.AWS), cfg.StateMachineARN)
	jobs := lambdaenv.Jobs(cfg, env.AWS)
	svc := export.NewService(jobs, lambdaenv.Files(cfg, s3c), runner, src, cfg.Export(), env.Log)
	// Kick-offs wait in the global queue of running jobs; kick-offs and
	// cancels are counted (EMF lines).
	lambdaenv.Observe(svc, jobs, cfg, lambdaenv.Metrics(cfg))
	h := apigw.Handler(svc, apigw.Options{
		BaseURL: cfg.PublicBaseURL, Auth: cfg.Auth, TokenURL: cfg.TokenURL, Keys: keys,
		StatusOnly: cfg.StatusOnly, Log: env.Log,
	})
	lambda.Start(apigw.NewGateway(h).Invoke)
}
