package main

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigateway"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2integrations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// Download modes of the stack (bulkfhir:downloads; docs/downloads.md):
// presigned S3 links in the manifest (default), or links to the API, which
// redirects after checking the token.
const (
	downloadsPresigned = settings.DownloadsPresigned
	downloadsRedirect  = settings.DownloadsRedirect
)

// signerSession is the download-signer role's MaxSessionDuration and the
// session the status function asks for: one hour, the most STS grants to
// role chaining (a function's role session assuming another role), and so
// the longest a presigned link can live.
const signerSession = 60 * 60

// signedFiles is what the download signer may read under the export
// prefix: the exported files (export.FileKey, errors files alike).
const signedFiles = "*.ndjson"

// checkDownloads refuses an unknown download mode.
func (p StackProps) checkDownloads() error {
	switch p.Downloads {
	case "", downloadsPresigned, downloadsRedirect:
		return nil
	}
	return fmt.Errorf("bulkfhir:downloads must be presigned or redirect, not %q", p.Downloads)
}

// downloads adds the download-signer role, which the status function
// assumes to sign links (read-only on the exported files, sessions of up to
// 1 h, so no link outlives the session that signed it), and the
// authorized download route on the status function. Call it after the API
// exists.
func (s *Stack) downloads(props StackProps) {
	status := s.Roles["status"]
	signer := awsiam.NewRole(s.Stack, jsii.String("DownloadSignerRole"), &awsiam.RoleProps{
		AssumedBy:          awsiam.NewArnPrincipal(status.RoleArn()),
		MaxSessionDuration: awscdk.Duration_Seconds(jsii.Number(signerSession)),
		Description:        jsii.String("bulkfhir: signs the download links of the manifest (read-only on the exported files)"),
	})
	// The exported files only (every manifest file is .ndjson): not the
	// plan, patient batches, cursors and spill parts beside them, which
	// hold patient ids and no client downloads.
	signer.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:   jsii.Strings("s3:GetObject"),
		Resources: &[]*string{join(s.Bucket.BucketArn(), jsii.String("/"+exportPrefix+signedFiles))},
	}))
	if key := s.Bucket.EncryptionKey(); key != nil {
		signer.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Actions: jsii.Strings("kms:Decrypt"), Resources: &[]*string{key.KeyArn()},
		}))
	}
	s.Roles["downloadSigner"] = signer
	s.allow("status", []string{"sts:AssumeRole"}, signer.RoleArn())
	fn := s.Functions["status"]
	fn.AddEnvironment(jsii.String(settings.EnvLinkSignerRoleARN), signer.RoleArn(), nil)
	fn.AddEnvironment(jsii.String(settings.EnvLinkSession), jsii.String("1h"), nil)
	// make sam-env resolves the function's variable from this output.
	awscdk.NewCfnOutput(s.Stack, jsii.String("DownloadSignerRoleArn"), &awscdk.CfnOutputProps{
		Value: signer.RoleArn(), Description: jsii.String("the role the status function assumes to sign download links"),
	})

	if props.Downloads == downloadsRedirect {
		for _, name := range []string{"kickoff", "status"} {
			s.Functions[name].AddEnvironment(jsii.String(settings.EnvDownloads), jsii.String(downloadsRedirect), nil)
		}
	}
	// The download route in both modes: redirect mode's manifests link to
	// it, and in presigned mode a complete manifest too large for one
	// Lambda response with presigned links links to it instead
	// (docs/aws.md, "Manifests over the response limit").
	if s.Api != nil {
		// The API's default authorizer guards the route, as the status one.
		s.Api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
			Path:        jsii.String("/fhir/bulkfiles/{proxy+}"),
			Methods:     &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_GET, awsapigatewayv2.HttpMethod_HEAD},
			Integration: awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String("DownloadIntegration"), fn, nil),
		})
	}
	if s.RestApi != nil {
		guarded := &awsapigateway.MethodOptions{AuthorizationType: awsapigateway.AuthorizationType_NONE}
		if s.RestAuthorizer != nil {
			guarded = &awsapigateway.MethodOptions{AuthorizationType: awsapigateway.AuthorizationType_CUSTOM, Authorizer: s.RestAuthorizer}
		}
		files := s.RestApi.Root().GetResource(jsii.String("fhir")).AddResource(jsii.String("bulkfiles"), nil).AddResource(jsii.String("{proxy+}"), nil)
		integration := awsapigateway.NewLambdaIntegration(fn, nil)
		for _, m := range []string{"GET", "HEAD"} {
			files.AddMethod(jsii.String(m), integration, guarded)
		}
	}
}
