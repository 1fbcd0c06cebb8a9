// Command infra is the CDK app that deploys bulkfhir: one stack with the
// HTTP API, the Lambda functions (from ../build, `make lambdas`), the export
// state machine (statemachine/export.asl.json), the jobs table and the
// export bucket. cdk-nag's AwsSolutions checks run on every synth; every
// suppression carries its reason. Tune it with -c bulkfhir:<name>=<value>
// (see props.go).
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

func main() {
	defer jsii.Close()
	app := awscdk.NewApp(nil)
	props, err := propsFromContext(func(k string) any { return app.Node().TryGetContext(jsii.String(k)) })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	props.StackProps = awscdk.StackProps{Description: jsii.String("bulkfhir: FHIR Bulk Data export, serverless")}
	// Environment-agnostic unless the CLI knows the account and region.
	if account, region := os.Getenv("CDK_DEFAULT_ACCOUNT"), os.Getenv("CDK_DEFAULT_REGION"); account != "" && region != "" {
		props.Env = &awscdk.Environment{Account: jsii.String(account), Region: jsii.String(region)}
	}
	name := "bulkfhir"
	if v, ok := app.Node().TryGetContext(jsii.String("bulkfhir:stackName")).(string); ok && v != "" {
		name = v
	}
	NewStack(app, name, props)
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}))
	if props.Profile == profileProduction {
		// What a HIPAA review runs: synth fails on a new finding.
		awscdk.Aspects_Of(app).Add(cdknag.NewHIPAASecurityChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}))
		awscdk.Aspects_Of(app).Add(cdknag.NewNIST80053R5Checks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}))
	}
	app.Synth(nil)
}
