package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigateway"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigatewayv2integrations"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssecretsmanager"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// Names shared with the Go code (the functions read these variables, the
// job store these keys).
const (
	exportPrefix = "exports/"
	attrPK       = "pk"
	attrSK       = "sk"
	attrOwner    = "owner"
	attrTTL      = "expiresAt"
	ownerIndex   = "byOwner"
)

// function describes one Lambda function of the stack.
type function struct {
	name    string
	memory  float64
	timeout awscdk.Duration
}

// defaultExportTmpMB is the export function's /tmp: a 5,000-patient batch
// of an organizeOutputBy=Patient export of typical records (about 126 KB
// per patient, bulkfhir generate) needs about 630 MB, more than Lambda's
// default 512 MB. Ephemeral storage beyond 512 MB costs $0.0000000309 per
// GB-second, under 0.1 % of the function's memory price.
const defaultExportTmpMB = 2048

// Stack is the bulkfhir stack and the constructs its tests look at.
type Stack struct {
	awscdk.Stack
	// Api is the HTTP API (bulkfhir:apiType=http), RestApi the REST API
	// (apiType=rest) with its authorizer: one of the two is nil.
	Api            awsapigatewayv2.HttpApi
	RestApi        awsapigateway.RestApi
	RestAuthorizer awsapigateway.TokenAuthorizer
	restPublic     []awsapigateway.Method
	Table          awsdynamodb.Table
	Bucket         awss3.Bucket
	Source         awss3.IBucket
	StateMachine   awsstepfunctions.StateMachine
	Functions      map[string]awslambda.Function
	Roles          map[string]awsiam.Role
	// AuthTable and TokenSecret exist in the default authorization mode.
	AuthTable    awsdynamodb.Table
	TokenSecret  awssecretsmanager.Secret
	publicRoutes func(awsapigatewayv2.HttpApi, awsapigatewayv2.HttpRouteIntegration)
	// AccessLogsBucket is the access logs bucket the stack made (profile.go).
	AccessLogsBucket awss3.Bucket
	// AlarmTopic, Alarms (by name) and Dashboard: dashboard.go.
	AlarmTopic awssns.Topic
	Alarms     map[string]awscloudwatch.Alarm
	Dashboard  awscloudwatch.Dashboard
}

// NewStack builds the whole system: HTTP API → kickoff/status functions,
// the export state machine over the plan/export/finalize/fail functions,
// the jobs table, the export bucket and the source.
func NewStack(scope constructs.Construct, id string, props StackProps) *Stack {
	props = props.withDefaults()
	if err := props.check(); err != nil {
		panic(err.Error())
	}
	stack := awscdk.NewStack(scope, &id, &props.StackProps)
	s := &Stack{Stack: stack, Functions: map[string]awslambda.Function{}, Roles: map[string]awsiam.Role{}}

	var key awskms.Key
	if props.KMS {
		key = awskms.NewKey(stack, jsii.String("DataKey"), &awskms.KeyProps{
			EnableKeyRotation: jsii.Bool(true),
			Description:       jsii.String("bulkfhir: encrypts exported files and job records"),
		})
	}
	removal := awscdk.RemovalPolicy_DESTROY
	if props.RetainData {
		removal = awscdk.RemovalPolicy_RETAIN
	}

	// Jobs: one on-demand table, TTL on expiresAt.
	tableProps := &awsdynamodb.TableProps{
		PartitionKey:        &awsdynamodb.Attribute{Name: jsii.String(attrPK), Type: awsdynamodb.AttributeType_STRING},
		SortKey:             &awsdynamodb.Attribute{Name: jsii.String(attrSK), Type: awsdynamodb.AttributeType_STRING},
		BillingMode:         awsdynamodb.BillingMode_PAY_PER_REQUEST,
		TimeToLiveAttribute: jsii.String(attrTTL),
		PointInTimeRecovery: jsii.Bool(true),
		Encryption:          awsdynamodb.TableEncryption_AWS_MANAGED,
		RemovalPolicy:       removal,
	}
	if key != nil {
		tableProps.Encryption = awsdynamodb.TableEncryption_CUSTOMER_MANAGED
		tableProps.EncryptionKey = key
	}
	s.Table = awsdynamodb.NewTable(stack, jsii.String("Jobs"), tableProps)
	s.Table.AddGlobalSecondaryIndex(&awsdynamodb.GlobalSecondaryIndexProps{
		IndexName:        jsii.String(ownerIndex),
		PartitionKey:     &awsdynamodb.Attribute{Name: jsii.String(attrOwner), Type: awsdynamodb.AttributeType_STRING},
		ProjectionType:   awsdynamodb.ProjectionType_INCLUDE,
		NonKeyAttributes: jsii.Strings("status"),
	})

	// Exported files: private, TLS only, encrypted; deleted at Expires by
	// the expire function (retention.go), with a lifecycle rule behind it
	// that never reaches a running or unexpired job's files; broken
	// uploads cleaned after a day.
	bucketProps := &awss3.BucketProps{
		BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
		EnforceSSL:        jsii.Bool(true),
		Encryption:        awss3.BucketEncryption_S3_MANAGED,
		ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
		RemovalPolicy:     removal,
		AutoDeleteObjects: jsii.Bool(!props.RetainData),
		LifecycleRules: &[]*awss3.LifecycleRule{{
			Id:                                  jsii.String("retention"),
			Prefix:                              jsii.String(exportPrefix),
			Expiration:                          awscdk.Duration_Days(jsii.Number(BackstopDays(props.MaxJobDuration, props.Retention))),
			AbortIncompleteMultipartUploadAfter: awscdk.Duration_Days(jsii.Number(1)),
		}, {
			// The S3 source's patient indexes: a cache, rebuilt when
			// missing; an object's index is left behind when it changes.
			Id:         jsii.String("patient-index"),
			Prefix:     jsii.String(settings.PatientIndexPrefix),
			Expiration: awscdk.Duration_Days(jsii.Number(30)),
		}},
	}
	if key != nil {
		bucketProps.Encryption = awss3.BucketEncryption_KMS
		bucketProps.EncryptionKey = key
		bucketProps.BucketKeyEnabled = jsii.Bool(true)
	}
	if logs := s.accessLogs(props); logs != nil {
		bucketProps.ServerAccessLogsBucket = logs
		bucketProps.ServerAccessLogsPrefix = jsii.String("bulkfhir-exports/")
	}
	s.Bucket = awss3.NewBucket(stack, jsii.String("Exports"), bucketProps)

	// The source: an upstream FHIR server, an existing bucket of NDJSON, or
	// one made here to upload to.
	switch {
	case props.SourceURL != "":
	case props.SourceBucket != "":
		s.Source = awss3.Bucket_FromBucketName(stack, jsii.String("Source"), jsii.String(props.SourceBucket))
	default:
		s.Source = awss3.NewBucket(stack, jsii.String("SourceData"), &awss3.BucketProps{
			BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
			EnforceSSL:        jsii.Bool(true),
			Encryption:        awss3.BucketEncryption_S3_MANAGED,
			ObjectOwnership:   awss3.ObjectOwnership_BUCKET_OWNER_ENFORCED,
			RemovalPolicy:     awscdk.RemovalPolicy_RETAIN,
		})
	}

	env := map[string]*string{
		settings.EnvTable:          s.Table.TableName(),
		settings.EnvBucket:         s.Bucket.BucketName(),
		settings.EnvBucketPrefix:   jsii.String(exportPrefix),
		settings.EnvRetention:      jsii.String(props.Retention.String()),
		settings.EnvMaxJobDuration: jsii.String(props.MaxJobDuration.String()),
	}
	if s.Source != nil {
		env[settings.EnvSourceBucket] = s.Source.BucketName()
		env[settings.EnvSourcePrefix] = jsii.String(props.SourcePrefix)
	} else {
		for k, v := range map[string]string{
			settings.EnvSourceURL: props.SourceURL, settings.EnvSourceSecretARN: props.SourceSecretArn,
			settings.EnvSourceClientID: props.SourceClientID, settings.EnvSourceTokenURL: props.SourceTokenURL,
			settings.EnvSourceScope: props.SourceScope, settings.EnvSourceSigV4Region: props.SourceSigV4Region,
		} {
			if v != "" {
				env[k] = jsii.String(v)
			}
		}
	}
	if props.PublicBaseURL != "" {
		env[settings.EnvPublicBaseURL] = jsii.String(props.PublicBaseURL)
	}

	for _, f := range []function{
		{"kickoff", 512, awscdk.Duration_Seconds(jsii.Number(29))},
		{"status", 512, awscdk.Duration_Seconds(jsii.Number(29))},
		{"plan", 512, awscdk.Duration_Minutes(jsii.Number(5))},
		{"export", float64(props.ExportMemoryMB), awscdk.Duration_Minutes(jsii.Number(15))},
		{"finalize", 256, awscdk.Duration_Minutes(jsii.Number(1))},
		{"fail", 256, awscdk.Duration_Minutes(jsii.Number(1))},
	} {
		fenv := env
		if f.name == "status" {
			// The status function reads no source (lambdaenv.RoleStatus):
			// it gets no source settings, and its role no source read.
			fenv = map[string]*string{}
			for k, v := range env {
				if !strings.HasPrefix(k, "BULKFHIR_SOURCE_") {
					fenv[k] = v
				}
			}
		}
		s.newFunction(f, props, fenv)
	}

	// The state machine: the committed ASL file (the one the tests run), with
	// the function ARNs, the plan bucket, the Map's concurrency and the
	// timeout substituted. Its name is fixed so its role can name its own
	// child executions without a dependency cycle.
	definition := mustRead(DefinitionFile)
	smName := join(awscdk.Aws_STACK_NAME(), jsii.String("-export"))
	smLogs := awslogs.NewLogGroup(stack, jsii.String("StateMachineLogs"), &awslogs.LogGroupProps{
		Retention: props.LogRetention, RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	s.StateMachine = awsstepfunctions.NewStateMachine(stack, jsii.String("ExportStateMachine"), &awsstepfunctions.StateMachineProps{
		StateMachineName: smName,
		DefinitionBody:   awsstepfunctions.DefinitionBody_FromString(jsii.String(definition)),
		DefinitionSubstitutions: &map[string]*string{
			"PlanFunctionArn":     s.Functions["plan"].FunctionArn(),
			"ExportFunctionArn":   s.Functions["export"].FunctionArn(),
			"FinalizeFunctionArn": s.Functions["finalize"].FunctionArn(),
			"FailFunctionArn":     s.Functions["fail"].FunctionArn(),
			"MaxConcurrency":      jsii.String(fmt.Sprint(props.MaxConcurrency)),
			"TimeoutSeconds":      jsii.String(fmt.Sprint(int64(props.MaxJobDuration.Seconds()))),
			"ExportBucket":        s.Bucket.BucketName(),
			"ExportPrefix":        jsii.String(exportPrefix),
		},
		TracingEnabled: jsii.Bool(true),
		Logs: &awsstepfunctions.LogOptions{
			Destination: smLogs,
			Level:       awsstepfunctions.LogLevel_ALL,
			// Execution data carries job ids and cursors, never resources;
			// it stays out of the logs all the same.
			IncludeExecutionData: jsii.Bool(false),
		},
	})
	for _, name := range []string{"plan", "export", "finalize", "fail"} {
		s.Functions[name].GrantInvoke(s.StateMachine)
	}
	s.distributedMap(smName)
	s.endJobsOfEndedExecutions()
	for _, name := range []string{"kickoff", "status"} {
		s.Functions[name].AddEnvironment(jsii.String(settings.EnvStateMachine), s.StateMachine.StateMachineArn(), nil)
	}
	s.grant(props)
	s.vpc(props)
	if props.ApiType == apiREST {
		s.restAPI(props)
	} else {
		s.api(props)
	}
	s.downloads(props)
	s.expiry(props)

	s.ops(props)

	awscdk.NewCfnOutput(stack, jsii.String("FhirBaseUrl"), &awscdk.CfnOutputProps{
		Value:       awscdk.Fn_Join(jsii.String(""), &[]*string{s.apiURL(), jsii.String("/fhir")}),
		Description: jsii.String("FHIR base URL: [base]/$export, [base]/Patient/$export, [base]/Group/{id}/$export"),
	})
	awscdk.NewCfnOutput(stack, jsii.String("ExportBucket"), &awscdk.CfnOutputProps{Value: s.Bucket.BucketName()})
	if s.Source != nil {
		awscdk.NewCfnOutput(stack, jsii.String("SourceBucket"), &awscdk.CfnOutputProps{
			Value: s.Source.BucketName(), Description: jsii.String("upload the NDJSON to export here (under the source prefix)"),
		})
	}
	awscdk.NewCfnOutput(stack, jsii.String("JobsTable"), &awscdk.CfnOutputProps{Value: s.Table.TableName()})
	if s.AuthTable != nil {
		awscdk.NewCfnOutput(stack, jsii.String("AuthTableName"), &awscdk.CfnOutputProps{
			Value: s.AuthTable.TableName(), Description: jsii.String("register clients here: bulkfhir clients add --table <this>"),
		})
	}
	awscdk.NewCfnOutput(stack, jsii.String("StateMachineArn"), &awscdk.CfnOutputProps{Value: s.StateMachine.StateMachineArn()})
	s.localOutputs(props)
	s.encryptLogs(key)
	suppress(s, props)
	return s
}

// newFunction makes a function with its own role, log group and tracing.
func (s *Stack) newFunction(f function, props StackProps, env map[string]*string) {
	logs := awslogs.NewLogGroup(s.Stack, jsii.String(title(f.name)+"Logs"), &awslogs.LogGroupProps{
		Retention: props.LogRetention, RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	role := awsiam.NewRole(s.Stack, jsii.String(title(f.name)+"Role"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("bulkfhir " + f.name + " function"),
	})
	// Logs to its own log group only (no managed policy).
	role.AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:   jsii.Strings("logs:CreateLogStream", "logs:PutLogEvents"),
		Resources: &[]*string{logs.LogGroupArn(), awscdk.Fn_Join(jsii.String(""), &[]*string{logs.LogGroupArn(), jsii.String(":*")})},
	}))
	var tmp awscdk.Size // Lambda's default 512 MB
	if f.name == "export" && props.ExportTmpMB > 512 {
		tmp = awscdk.Size_Mebibytes(jsii.Number(float64(props.ExportTmpMB)))
	}
	fn := awslambda.NewFunction(s.Stack, jsii.String(title(f.name)), &awslambda.FunctionProps{
		FunctionName:         join(awscdk.Aws_STACK_NAME(), jsii.String("-"+f.name)),
		Runtime:              awslambda.Runtime_PROVIDED_AL2023(),
		Architecture:         props.lambdaArchitecture(),
		Handler:              jsii.String("bootstrap"),
		Code:                 awslambda.Code_FromAsset(jsii.String(filepath.Join(props.BuildDir, f.name)), nil),
		MemorySize:           jsii.Number(f.memory),
		Timeout:              f.timeout,
		Environment:          &env,
		Role:                 role,
		LogGroup:             logs,
		LoggingFormat:        awslambda.LoggingFormat_JSON,
		Tracing:              awslambda.Tracing_ACTIVE,
		Description:          jsii.String("bulkfhir " + f.name),
		EphemeralStorageSize: tmp,
	})
	s.Functions[f.name] = fn
	s.Roles[f.name] = role
}

// allow adds one statement to a function's role.
func (s *Stack) allow(fn string, actions []string, resources ...*string) {
	s.Roles[fn].AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions: jsii.Strings(actions...), Resources: &resources,
	}))
}

func join(parts ...*string) *string { return awscdk.Fn_Join(jsii.String(""), &parts) }

// sourceReaders are the functions that read the source.
var sourceReaders = []string{"kickoff", "plan", "export"}

// vpc places the source readers in the given subnets and security groups,
// with the network-interface permissions Lambda needs there.
func (s *Stack) vpc(props StackProps) {
	if len(props.VpcSubnetIds) == 0 {
		return
	}
	for _, name := range sourceReaders {
		cfn := s.Functions[name].Node().DefaultChild().(awslambda.CfnFunction)
		cfn.AddPropertyOverride(jsii.String("VpcConfig"), map[string]any{
			"SubnetIds": props.VpcSubnetIds, "SecurityGroupIds": props.VpcSecurityGroupIds,
		})
		s.allow(name, []string{"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
			"ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"}, jsii.String("*"))
	}
}

// readUpstream lets a function read the upstream's credentials secret and,
// with SigV4, search and read the HealthLake data stores of the region.
func (s *Stack) readUpstream(fn string, props StackProps) {
	if props.SourceSecretArn != "" {
		s.allow(fn, []string{"secretsmanager:GetSecretValue"}, jsii.String(props.SourceSecretArn))
	}
	if props.SourceSigV4Region != "" {
		stores := join(jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":healthlake:"+props.SourceSigV4Region+":"),
			awscdk.Aws_ACCOUNT_ID(), jsii.String(":datastore/fhir/*"))
		s.allow(fn, []string{"healthlake:GetCapabilities", "healthlake:ReadResource", "healthlake:SearchWithGet", "healthlake:SearchWithPost"}, stores)
	}
}

// grant gives each function exactly the actions it performs, on exactly
// its resources.
func (s *Stack) grant(props StackProps) {
	table := s.Table.TableArn()
	exports := join(s.Bucket.BucketArn(), jsii.String("/"+exportPrefix+"*"))
	executions := join(jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":states:"), awscdk.Aws_REGION(), jsii.String(":"),
		awscdk.Aws_ACCOUNT_ID(), jsii.String(":execution:"), s.StateMachine.StateMachineName(), jsii.String(":*"))

	listPrefix := func(fn string, bucket *string, prefix string) {
		s.Roles[fn].AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Actions:    jsii.Strings("s3:ListBucket"),
			Resources:  &[]*string{bucket},
			Conditions: &map[string]any{"StringLike": map[string]any{"s3:prefix": []string{prefix + "*"}}},
		}))
	}
	readSource := func(fn string) {
		if s.Source == nil {
			s.readUpstream(fn, props)
			return
		}
		s.allow(fn, []string{"s3:GetObject"}, join(s.Source.BucketArn(), jsii.String("/"+props.SourcePrefix+"*")))
		listPrefix(fn, s.Source.BucketArn(), props.SourcePrefix)
	}
	// The S3 source's patient indexes: plan builds them, export reads them
	// (ListBucket so a missing index is a 404, not a 403).
	patientIndex := func(fn string, actions ...string) {
		if s.Source == nil {
			return
		}
		s.allow(fn, actions, join(s.Bucket.BucketArn(), jsii.String("/"+settings.PatientIndexPrefix+"*")))
		listPrefix(fn, s.Bucket.BucketArn(), settings.PatientIndexPrefix)
	}

	// kickoff: create the job together with a live-job slot
	// (TransactWriteItems of two Puts), read the owner's slots and their
	// jobs, start the execution; the metadata and Group routes read the
	// source.
	s.allow("kickoff", []string{"dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}, table)
	s.allow("kickoff", []string{"states:StartExecution"}, s.StateMachine.StateMachineArn())
	readSource("kickoff")
	// status: read the job and its files, cancel (transition, stop the
	// execution, delete the objects). It reads no source and no export
	// file: its links are signed by download-signer sessions (downloads).
	s.allow("status", []string{"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}, table)
	s.allow("status", []string{"s3:DeleteObject"}, exports)
	listPrefix("status", s.Bucket.BucketArn(), exportPrefix)
	s.allow("status", []string{"states:StopExecution"}, executions)
	// plan: read the request, start the job, record the lenient warnings.
	s.allow("plan", []string{"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"}, table)
	s.allow("plan", []string{"s3:PutObject", "s3:AbortMultipartUpload"}, exports)
	readSource("plan")
	patientIndex("plan", "s3:GetObject", "s3:PutObject")
	// export: stream files under the export prefix, record files and
	// progress, and clean up after a cancel.
	// Progress and file items go in a transaction with a check of the job.
	s.allow("export", []string{"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem", "dynamodb:ConditionCheckItem"}, table)
	// GetObject reads the unit's patient batch.
	s.allow("export", []string{"s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject"}, exports)
	listPrefix("export", s.Bucket.BucketArn(), exportPrefix)
	readSource("export")
	patientIndex("export", "s3:GetObject")
	// finalize: read the job and its files, complete it.
	s.allow("finalize", []string{"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"}, table)
	// fail: mark the job failed; if that cannot be recorded, delete the
	// job's objects and try again (export.Steps.Fail).
	s.allow("fail", []string{"dynamodb:GetItem", "dynamodb:UpdateItem"}, table)
	s.allow("fail", []string{"s3:DeleteObject"}, exports)
	listPrefix("fail", s.Bucket.BucketArn(), exportPrefix)

	// With a customer-managed key, every function reads or writes the table
	// or the bucket through it: exactly these actions, on that key.
	if key := s.Bucket.EncryptionKey(); key != nil {
		for _, fn := range []string{"kickoff", "status", "plan", "export", "finalize", "fail"} {
			s.allow(fn, []string{"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"}, key.KeyArn())
		}
	}
}

// distributedMap lets the state machine run its Distributed Map: start,
// describe and stop its own child executions, read the plan objects
// (ItemReader) and write the map run results (ResultWriter) under the
// export prefix.
func (s *Stack) distributedMap(smName *string) {
	arn := func(kind string, tail string) *string {
		return join(jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":states:"), awscdk.Aws_REGION(), jsii.String(":"),
			awscdk.Aws_ACCOUNT_ID(), jsii.String(":"+kind+":"), smName, jsii.String(tail))
	}
	add := func(actions []string, resources ...*string) {
		s.StateMachine.AddToRolePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
			Actions: jsii.Strings(actions...), Resources: &resources,
		}))
	}
	add([]string{"states:StartExecution"}, arn("stateMachine", ""))
	add([]string{"states:DescribeExecution", "states:StopExecution"}, arn("execution", "/*"))
	add([]string{"s3:GetObject"}, join(s.Bucket.BucketArn(), jsii.String("/"+exportPrefix+"*/plan.json")))
	add([]string{"s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"},
		join(s.Bucket.BucketArn(), jsii.String("/"+exportPrefix+"mapruns/*")))
	if key := s.Bucket.EncryptionKey(); key != nil {
		add([]string{"kms:Decrypt", "kms:GenerateDataKey"}, key.KeyArn())
	}
}

// endJobsOfEndedExecutions sends every FAILED, TIMED_OUT or ABORTED
// execution of the state machine to the fail function, which marks a job
// still live failed: an execution that ends without reaching MarkFailed
// (a timeout, an uncatchable error, an abort) cannot leave its job in
// progress.
func (s *Stack) endJobsOfEndedExecutions() {
	rule := awsevents.NewRule(s.Stack, jsii.String("ExecutionEnded"), &awsevents.RuleProps{
		Description: jsii.String("bulkfhir: mark the job of a failed, timed-out or aborted export execution failed"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings("aws.states"),
			DetailType: jsii.Strings(settings.StatusChangeDetailType),
			Detail: &map[string]any{
				"status":          []string{"FAILED", "TIMED_OUT", "ABORTED"},
				"stateMachineArn": []*string{s.StateMachine.StateMachineArn()},
			},
		},
	})
	rule.AddTarget(awseventstargets.NewLambdaFunction(s.Functions["fail"], &awseventstargets.LambdaFunctionProps{
		RetryAttempts: jsii.Number(8),
		MaxEventAge:   awscdk.Duration_Hours(jsii.Number(6)),
	}))
}

// api is the HTTP API: the status route explicitly, everything else under
// /fhir/{proxy+} (routed inside the handler: '$' in route paths is not
// verified against the service).
func (s *Stack) api(props StackProps) {
	auth := s.authorization(props)
	s.Api = awsapigatewayv2.NewHttpApi(s.Stack, jsii.String("Api"), &awsapigatewayv2.HttpApiProps{
		Description:        jsii.String("bulkfhir FHIR Bulk Data export API"),
		CreateDefaultStage: jsii.Bool(true),
		DefaultAuthorizer:  auth,
	})
	kickoff := awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String("KickoffIntegration"), s.Functions["kickoff"], nil)
	if s.publicRoutes != nil {
		s.publicRoutes(s.Api, kickoff)
	}
	status := awsapigatewayv2integrations.NewHttpLambdaIntegration(jsii.String("StatusIntegration"), s.Functions["status"], nil)
	s.Api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
		Path: jsii.String("/fhir/bulkstatus/{job}"), Methods: &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_GET, awsapigatewayv2.HttpMethod_DELETE},
		Integration: status,
	})
	s.Api.AddRoutes(&awsapigatewayv2.AddRoutesOptions{
		Path: jsii.String("/fhir/{proxy+}"), Methods: &[]awsapigatewayv2.HttpMethod{awsapigatewayv2.HttpMethod_GET, awsapigatewayv2.HttpMethod_POST},
		Integration: kickoff,
	})
	accessLogs := awslogs.NewLogGroup(s.Stack, jsii.String("ApiAccessLogs"), &awslogs.LogGroupProps{
		Retention: props.LogRetention, RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	stage := s.Api.DefaultStage().Node().DefaultChild().(awsapigatewayv2.CfnStage)
	stage.SetDefaultRouteSettings(&awsapigatewayv2.CfnStage_RouteSettingsProperty{
		ThrottlingRateLimit:  jsii.Number(props.ThrottleRateLimit),
		ThrottlingBurstLimit: jsii.Number(float64(props.ThrottleBurstLimit)),
	})
	stage.SetAccessLogSettings(&awsapigatewayv2.CfnStage_AccessLogSettingsProperty{
		DestinationArn: accessLogs.LogGroupArn(),
		Format: jsii.String(`{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","time":"$context.requestTime",` +
			`"method":"$context.httpMethod","route":"$context.routeKey","status":"$context.status","latency":"$context.responseLatency"}`),
	})
}

func title(s string) string { return string(s[0]-'a'+'A') + s[1:] }

// DefinitionFile is the state machine definition, relative to infra/.
const DefinitionFile = "statemachine/export.asl.json"

func mustRead(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		panic(fmt.Sprintf("read %s: %v", path, err))
	}
	return string(b)
}
