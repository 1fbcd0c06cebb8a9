package main

import (
	"slices"

	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// Reasons for the cdk-nag findings the stack accepts. A reviewer reads
// these in the NagReport; the stack tests check each wildcard is one of
// these and nothing wider.
const (
	reasonLogStreams = "Lambda creates log streams with generated names; the grant is limited to the function's own log group."
	reasonXRay       = "X-Ray PutTraceSegments and PutTelemetryRecords do not support resource-level permissions (active tracing)."
	reasonSource     = "Read-only access to the objects under the configured source prefix: the data this service exports."
	reasonExports    = "Export files live under exports/<job id>/ and job ids are created at run time; access is limited to that prefix of the stack's own bucket."
	reasonExecutions = "StopExecution on this state machine's executions only; execution names are job ids created at run time."
	reasonSFNLogging = "CloudWatch Logs delivery APIs used for state machine logging, and X-Ray, do not support resource-level permissions."
	reasonInvoke     = "Invoke the state machine's own task functions, including their versions and aliases (CDK grantInvoke); no other function."
	reasonChildren   = "The Distributed Map starts, describes and stops its own child executions (state machine <stack>-export, map run executions created at run time); no other state machine."
	reasonSigned     = "The download signer reads the exported files (exports/<job id>/<unit>/<name>.ndjson, job ids created at run time) of the stack's own bucket, and nothing else there."
	reasonPlanItems  = "The Distributed Map's ItemReader reads the plan object of each job (exports/<job id>/plan.json, job ids created at run time) and its ResultWriter writes under exports/mapruns/ of the stack's own bucket."
	reasonNoAuth     = "bulkfhir:allowAnonymous=true: this deployment was asked for an API without authentication (a development setting)."
	reasonPublicAuth = "The OAuth token endpoint, the SMART discovery document and the CapabilityStatement are how a client finds out how to get a token; they cannot require one (the token endpoint authenticates the client's signed assertion itself; metadata without a token holds only the operations and the token URL)."
	reasonTokenKey   = "The access token key signs tokens that live five minutes; rotating it without a rotation function would only log clients out. Replace the secret value to rotate it."
	reasonAccessLogs = "Server access logging is optional (context bulkfhir:accessLogsBucket): exported files are short-lived and every API request is logged by API Gateway's access log."
	reasonVPC        = "In a VPC (bulkfhir:vpcSubnetIds), Lambda manages the function's network interfaces with EC2 actions that do not support resource-level permissions (as AWSLambdaVPCAccessExecutionRole grants them)."
	reasonHealthLake = "SigV4 upstream: search and read the FHIR data stores of the configured HealthLake region (read-only actions; data store ids are not known to the stack)."
	reasonPatientIdx = "The S3 source's patient indexes live under patient-index/ of the stack's own bucket, one object pair per source object version (names derived from the object at run time); plan writes and reads them, export reads them."
	reasonSourceLogs = "The source bucket is created for convenience and only read by this stack; enable server access logging on it, or bring your own bucket (bulkfhir:sourceBucket), when required."
)

func regex(s string) map[string]*string { return map[string]*string{"regex": jsii.String(s)} }

func add(c constructs.IConstruct, id, reason string, appliesTo ...any) {
	sup := &cdknag.NagPackSuppression{Id: jsii.String(id), Reason: jsii.String(reason)}
	if len(appliesTo) > 0 {
		sup.AppliesTo = &appliesTo
	}
	cdknag.NagSuppressions_AddResourceSuppressions(c, &[]*cdknag.NagPackSuppression{sup}, jsii.Bool(true))
}

// suppress records the findings the stack accepts, each with its reason.
func suppress(s *Stack, props StackProps) {
	for name, role := range s.Roles {
		add(role, "AwsSolutions-IAM5", reasonLogStreams, regex("/^Resource::<"+title(name)+"Logs[0-9A-F]+\\.Arn>:\\*$/g"))
		reason := reasonXRay
		if len(props.VpcSubnetIds) > 0 && slices.Contains(sourceReaders, name) {
			reason += " " + reasonVPC
		}
		add(role, "AwsSolutions-IAM5", reason, "Resource::*")
		add(role, "AwsSolutions-IAM5", reasonSource, regex("/^Resource::<Source[A-Za-z0-9]*\\.Arn>\\/.*\\*$/g"), regex("/^Resource::arn:<AWS::Partition>:s3:::.*\\/.*\\*$/g"))
		add(role, "AwsSolutions-IAM5", reasonExports, regex("/^Resource::<Exports[0-9A-F]+\\.Arn>\\/exports\\/\\*$/g"))
		if props.SourceSigV4Region != "" {
			add(role, "AwsSolutions-IAM5", reasonHealthLake, regex("/^Resource::arn:<AWS::Partition>:healthlake:[a-z0-9-]+:<AWS::AccountId>:datastore\\/fhir\\/\\*$/g"))
		}
	}
	for _, fn := range []string{"plan", "export"} {
		add(s.Roles[fn], "AwsSolutions-IAM5", reasonPatientIdx, regex("/^Resource::<Exports[0-9A-F]+\\.Arn>\\/patient-index\\/\\*$/g"))
	}
	add(s.Roles["downloadSigner"], "AwsSolutions-IAM5", reasonSigned, regex("/^Resource::<Exports[0-9A-F]+\\.Arn>\\/exports\\/\\*\\.ndjson$/g"))
	add(s.Roles["status"], "AwsSolutions-IAM5", reasonExecutions, regex("/^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<ExportStateMachine[0-9A-F]+\\.Name>:\\*$/g"))
	add(s.StateMachine, "AwsSolutions-IAM5", reasonSFNLogging, "Resource::*")
	add(s.StateMachine, "AwsSolutions-IAM5", reasonChildren, regex("/^Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:<AWS::StackName>-export\\/\\*$/g"))
	add(s.StateMachine, "AwsSolutions-IAM5", reasonPlanItems, regex("/^Resource::<Exports[0-9A-F]+\\.Arn>\\/exports\\/(\\*\\/plan\\.json|mapruns\\/\\*)$/g"))
	add(s.StateMachine, "AwsSolutions-IAM5", reasonInvoke, regex("/^Resource::<(Plan|Export|Finalize|Fail)[0-9A-F]+\\.Arn>:\\*$/g"))
	var api constructs.IConstruct = s.Api
	if s.RestApi != nil {
		api = s.RestApi
		suppressREST(s)
	}
	if mode, _ := props.authMode(); mode == authNone {
		add(api, "AwsSolutions-APIG4", reasonNoAuth)
		if s.RestApi != nil {
			add(api, "AwsSolutions-COG4", reasonNoAuth)
		}
	}
	if s.TokenSecret != nil {
		add(s.TokenSecret, "AwsSolutions-SMG4", reasonTokenKey)
		if s.Api != nil {
			for _, r := range *s.Api.Node().Children() {
				if id := *r.Node().Id(); id == "POST--fhir--auth--token" || id == "GET--fhir--.well-known--smart-configuration" || id == "GET--fhir--metadata" {
					add(r, "AwsSolutions-APIG4", reasonPublicAuth)
				}
			}
		}
		for _, m := range s.restPublic {
			add(m, "AwsSolutions-APIG4", reasonPublicAuth)
			add(m, "AwsSolutions-COG4", reasonPublicAuth)
		}
	}
	if props.AccessLogsBucket == "" && !props.createAccessLogs {
		add(s.Bucket, "AwsSolutions-S1", reasonAccessLogs)
	}
	if b, ok := s.Source.(awss3.Bucket); ok {
		add(b, "AwsSolutions-S1", reasonSourceLogs)
	}
	suppressPacks(s, props)
}
