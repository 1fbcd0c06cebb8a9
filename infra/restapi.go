package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsapigateway"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/jsii-runtime-go"
)

// API types (bulkfhir:apiType).
const (
	apiHTTP = "http" // API Gateway v2 HTTP API: the default
	apiREST = "rest" // API Gateway v1 REST API: what LocalStack's free edition runs
)

// restStage is the REST API's stage: the first path segment of its URL.
const restStage = "prod"

// restAPI is the REST API variant of api(): the same routes to the same
// functions, the same throttling and access log, and bulkfhir's tokens
// checked by a cached TOKEN authorizer (the authorizer function answers
// both event formats) on every route but the public ones.
func (s *Stack) restAPI(props StackProps) {
	mode, _ := props.authMode()
	s.authorization(props) // the tables, secret and functions; the HTTP authorizer it returns is never bound
	accessLogs := awslogs.NewLogGroup(s.Stack, jsii.String("ApiAccessLogs"), &awslogs.LogGroupProps{
		Retention: props.LogRetention, RemovalPolicy: awscdk.RemovalPolicy_DESTROY,
	})
	s.RestApi = awsapigateway.NewRestApi(s.Stack, jsii.String("RestApi"), &awsapigateway.RestApiProps{
		Description: jsii.String("bulkfhir FHIR Bulk Data export API"),
		// Access logs need the account's API Gateway CloudWatch role.
		CloudWatchRole:              jsii.Bool(true),
		CloudWatchRoleRemovalPolicy: awscdk.RemovalPolicy_DESTROY,
		DeployOptions: &awsapigateway.StageOptions{
			StageName:            jsii.String(restStage),
			ThrottlingRateLimit:  jsii.Number(props.ThrottleRateLimit),
			ThrottlingBurstLimit: jsii.Number(float64(props.ThrottleBurstLimit)),
			AccessLogDestination: awsapigateway.NewLogGroupLogDestination(accessLogs),
			AccessLogFormat: awsapigateway.AccessLogFormat_Custom(jsii.String(`{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","time":"$context.requestTime",` +
				`"method":"$context.httpMethod","route":"$context.resourcePath","status":"$context.status","latency":"$context.responseLatency"}`)),
			// Errors only, and never request or response bodies (PHI).
			LoggingLevel:     awsapigateway.MethodLoggingLevel_ERROR,
			DataTraceEnabled: jsii.Bool(false),
			TracingEnabled:   jsii.Bool(true),
		},
	})

	s.restGatewayResponses()

	guarded := &awsapigateway.MethodOptions{AuthorizationType: awsapigateway.AuthorizationType_NONE}
	if mode == authBulkfhir {
		s.RestAuthorizer = awsapigateway.NewTokenAuthorizer(s.Stack, jsii.String("BulkfhirTokensRest"), &awsapigateway.TokenAuthorizerProps{
			Handler:         s.Functions["authorizer"],
			IdentitySource:  awsapigateway.IdentitySource_Header(jsii.String("Authorization")),
			ResultsCacheTtl: awscdk.Duration_Minutes(jsii.Number(5)),
		})
		guarded = &awsapigateway.MethodOptions{AuthorizationType: awsapigateway.AuthorizationType_CUSTOM, Authorizer: s.RestAuthorizer}
	}
	kickoff := awsapigateway.NewLambdaIntegration(s.Functions["kickoff"], nil)
	status := awsapigateway.NewLambdaIntegration(s.Functions["status"], nil)
	fhir := s.RestApi.Root().AddResource(jsii.String("fhir"), nil)
	job := fhir.AddResource(jsii.String("bulkstatus"), nil).AddResource(jsii.String("{job}"), nil)
	for _, m := range []string{"GET", "DELETE"} {
		job.AddMethod(jsii.String(m), status, guarded)
	}
	proxy := fhir.AddResource(jsii.String("{proxy+}"), nil)
	for _, m := range []string{"GET", "POST"} {
		proxy.AddMethod(jsii.String(m), kickoff, guarded)
	}
	if mode == authBulkfhir {
		// Public as on the HTTP API (reasonPublicAuth): how a client gets a token.
		public := &awsapigateway.MethodOptions{AuthorizationType: awsapigateway.AuthorizationType_NONE}
		token := awsapigateway.NewLambdaIntegration(s.Functions["token"], nil)
		s.restPublic = []awsapigateway.Method{
			fhir.AddResource(jsii.String("metadata"), nil).AddMethod(jsii.String("GET"), kickoff, public),
			fhir.AddResource(jsii.String("auth"), nil).AddResource(jsii.String("token"), nil).AddMethod(jsii.String("POST"), token, public),
			fhir.AddResource(jsii.String(".well-known"), nil).AddResource(jsii.String("smart-configuration"), nil).AddMethod(jsii.String("GET"), token, public),
		}
	}
}

// gatewayResponses are the answers API Gateway gives itself, before any
// function runs (no or a refused token, throttling, an unknown route, its
// own failures): each an OperationOutcome, as the functions' are, so a FHIR
// client can read why. $context.error.messageString is API Gateway's
// message, already a quoted JSON string.
var gatewayResponses = []struct {
	id, status, code string
	typ              func() awsapigateway.ResponseType
}{
	{"Unauthorized", "401", "login", awsapigateway.ResponseType_UNAUTHORIZED},
	{"AccessDenied", "403", "forbidden", awsapigateway.ResponseType_ACCESS_DENIED},
	{"Throttled", "429", "throttled", awsapigateway.ResponseType_THROTTLED},
	{"Default4xx", "", "invalid", awsapigateway.ResponseType_DEFAULT_4XX},
	{"Default5xx", "", "transient", awsapigateway.ResponseType_DEFAULT_5XX},
}

// operationOutcomeTemplate is the body of a gateway response.
func operationOutcomeTemplate(code string) string {
	return `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"` + code +
		`","diagnostics":$context.error.messageString}]}`
}

// restGatewayResponses answers API Gateway's own refusals on the REST API
// with OperationOutcomes. (An HTTP API cannot shape them: there its
// authorizer's 401 and 403 carry API Gateway's own JSON body.)
func (s *Stack) restGatewayResponses() {
	for _, g := range gatewayResponses {
		headers := map[string]*string{"Content-Type": jsii.String("'application/fhir+json'")}
		if g.status == "401" {
			headers["WWW-Authenticate"] = jsii.String("'Bearer'")
		}
		opts := &awsapigateway.GatewayResponseOptions{
			Type:            g.typ(),
			ResponseHeaders: &headers,
			Templates:       &map[string]*string{"application/json": jsii.String(operationOutcomeTemplate(g.code))},
		}
		if g.status != "" {
			opts.StatusCode = jsii.String(g.status)
		}
		s.RestApi.AddGatewayResponse(jsii.String(g.id), opts)
	}
}

// apiURL is the API's base URL, with a trailing slash on neither.
func (s *Stack) apiURL() *string {
	if s.RestApi != nil {
		return awscdk.Fn_Join(jsii.String(""), &[]*string{
			jsii.String("https://"), s.RestApi.RestApiId(), jsii.String(".execute-api."), awscdk.Aws_REGION(), jsii.String("."),
			awscdk.Aws_URL_SUFFIX(), jsii.String("/" + restStage),
		})
	}
	return s.Api.ApiEndpoint()
}

// Reasons for the REST API's cdk-nag findings.
const (
	reasonRestValidation = "The handler validates every request itself and answers a bad one with a 4xx and an OperationOutcome; a gateway model would duplicate the FHIR rules."
	reasonRestCognito    = "Clients authenticate with SMART Backend Services (signed JWT assertions) against bulkfhir's token endpoint; the TOKEN authorizer checks those tokens. There is no Cognito user pool."
	reasonRestWAF        = "A WAF web ACL is a per-account choice with its own cost (the default HTTP API cannot take one at all); attach one to the stage where policy asks for it. The stage is throttled and every route but token, discovery and metadata needs a token."
	reasonRestRole       = "API Gateway's account-level CloudWatch role for access logs uses AWS's managed policy AmazonAPIGatewayPushToCloudWatchLogs (created by CDK's cloudWatchRole)."
)

// suppressREST records the REST API's accepted findings.
func suppressREST(s *Stack) {
	add(s.RestApi, "AwsSolutions-APIG2", reasonRestValidation)
	add(s.RestApi.DeploymentStage(), "AwsSolutions-APIG3", reasonRestWAF)
	add(s.RestApi, "AwsSolutions-COG4", reasonRestCognito)
	add(s.RestApi, "AwsSolutions-IAM4", reasonRestRole, "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs")
}
