package main

import (
	"context"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/sfn"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
)

func main() {
	env := lambdaenv.MustLoad(lambdaenv.RoleStatus)
	cfg := env.Config
	s3c := lambdaenv.S3(env.AWS)
	// Status and cancel never read the source.
	src := lambdaenv.NoSource{}
	keys, err := lambdaauth.APIKeys(context.Background(), env.AWS, cfg.Auth, cfg.TokenSecretARN)
	env.Must("startup", err)
	runner := sfnrunner.New(sfn.NewFromConfig(env.AWS), cfg.StateMachineARN)
	// Links signed by download-signer sessions; in redirect mode the
	// manifest links to the API and this function answers the downloads.
	jobs := lambdaenv.Jobs(cfg, env.AWS)
	files := lambdaenv.Files(cfg, s3c)
	lambdaenv.SignLinks(files, cfg, env.AWS)
	links, deliver := apigw.DownloadLinks(files, cfg.Downloads.Redirect(), cfg.StatusOnly)
	svc := export.NewService(jobs, links, runner, src, cfg.Export(), env.Log)
	// Kick-offs wait in the global queue of running jobs; kick-offs and
	// cancels are counted (EMF lines).
	lambdaenv.Observe(svc, jobs, cfg, lambdaenv.Metrics(cfg))
	h := apigw.Handler(svc, apigw.Options{
		BaseURL: cfg.PublicBaseURL, Auth: cfg.Auth, TokenURL: cfg.TokenURL, Keys: keys,
		StatusOnly: cfg.StatusOnly, Deliver: deliver, Log: env.Log,
	})
	lambda.Start(apigw.NewGateway(h).Invoke)
}
