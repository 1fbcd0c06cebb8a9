package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

func TestMain(m *testing.M) {
	code := m.Run()
	jsii.Close()
	os.Exit(code)
}

var functions = []string{"kickoff", "status", "plan", "export", "finalize", "fail", "dispatch"}

// authFunctions exist in the default authorization mode (bulkfhir's tokens).
var authFunctions = []string{"token", "authorizer"}

// otherFunctions are the stack's functions outside the API and the export:
// the retention sweep (retention.go).
var otherFunctions = []string{"expire"}

// fakeBuild makes build/<fn>/bootstrap placeholders so stack tests do not
// depend on `make lambdas` (the SAM test uses the real build).
func fakeBuild(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, fn := range append(append(append([]string{}, functions...), authFunctions...), otherFunctions...) {
		os.MkdirAll(filepath.Join(dir, fn), 0o755)
		os.WriteFile(filepath.Join(dir, fn, "bootstrap"), []byte("placeholder"), 0o755)
	}
	return dir
}

type synthesized struct {
	stack     *Stack
	resources map[string]map[string]any
	outputs   map[string]any
	errors    []string
}

// synth builds the stack with cdk-nag applied and returns its template and
// unsuppressed cdk-nag errors.
func synth(t *testing.T, props StackProps, context map[string]any) synthesized {
	t.Helper()
	app := awscdk.NewApp(&awscdk.AppProps{Context: &context})
	s := NewStack(app, "test", props)
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(nil))
	tpl := assertions.Template_FromStack(s.Stack, nil)
	raw, _ := json.Marshal(tpl.ToJSON())
	var doc struct {
		Resources map[string]map[string]any
		Outputs   map[string]any
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	out := synthesized{stack: s, resources: doc.Resources, outputs: doc.Outputs}
	for _, m := range *assertions.Annotations_FromStack(s.Stack).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-.*"))) {
		out.errors = append(out.errors, fmt.Sprintf("%s: %v", *m.Id, m.Entry.Data))
	}
	return out
}

var (
	defaultStack synthesized
	once         bool
)

func base(t *testing.T) synthesized {
	t.Helper()
	if !once {
		defaultStack = synth(t, StackProps{BuildDir: fakeBuild(t), Retention: 30 * time.Hour, MaxConcurrency: 7, ThrottleRateLimit: 15, ThrottleBurstLimit: 30}, nil)
		once = true
	}
	return defaultStack
}

func (s synthesized) ofType(typ string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range s.resources {
		if r["Type"] == typ {
			out[id] = r
		}
	}
	return out
}

// functions are the stack's own functions (not CDK's custom resource ones).
func (s synthesized) functions() map[string]map[string]any {
	out := map[string]map[string]any{}
	for id, r := range s.ofType("AWS::Lambda::Function") {
		if d, _ := props(r)["Description"].(string); strings.HasPrefix(d, "bulkfhir ") {
			out[id] = r
		}
	}
	return out
}

func props(r map[string]any) map[string]any { p, _ := r["Properties"].(map[string]any); return p }

func js(v any) string { b, _ := json.Marshal(v); return string(b) }

// logicalID finds the one resource of typ whose logical id starts with prefix.
func (s synthesized) logicalID(t *testing.T, typ, prefix string) string {
	t.Helper()
	var found []string
	for id := range s.ofType(typ) {
		if strings.HasPrefix(id, prefix) {
			found = append(found, id)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s %s*: found %v", typ, prefix, found)
	}
	return found[0]
}

func TestRoutesAndThrottling(t *testing.T) {
	s := base(t)
	var keys []string
	for _, r := range s.ofType("AWS::ApiGatewayV2::Route") {
		keys = append(keys, props(r)["RouteKey"].(string))
	}
	sort.Strings(keys)
	want := "DELETE /fhir/bulkstatus/{job},GET /fhir/.well-known/smart-configuration,GET /fhir/bulkfiles/{proxy+},GET /fhir/bulkstatus/{job},GET /fhir/metadata,GET /fhir/{proxy+},HEAD /fhir/bulkfiles/{proxy+},POST /fhir/auth/token,POST /fhir/{proxy+}"
	if strings.Join(keys, ",") != want {
		t.Errorf("routes = %v, want %s", keys, want)
	}
	// Each route reaches the right function.
	for _, r := range s.ofType("AWS::ApiGatewayV2::Integration") {
		uri := js(props(r)["IntegrationUri"])
		if !strings.Contains(uri, "Kickoff") && !strings.Contains(uri, "Status") && !strings.Contains(uri, "Token") {
			t.Errorf("integration to %s", uri)
		}
	}
	for _, r := range s.ofType("AWS::ApiGatewayV2::Route") {
		p := props(r)
		target := js(p["Target"])
		key := p["RouteKey"].(string)
		wantTarget := "KickoffIntegration"
		switch {
		case strings.Contains(key, "bulkstatus"):
			wantTarget = "StatusIntegration"
		case strings.Contains(key, "bulkfiles"):
			wantTarget = "DownloadIntegration" // on the status function
		case strings.Contains(key, "/auth/token") || strings.Contains(key, "smart-configuration"):
			wantTarget = "TokenIntegration"
		}
		if !strings.Contains(target, wantTarget) {
			t.Errorf("route %s targets %s, want %s", key, target, wantTarget)
		}
	}
	for _, r := range s.ofType("AWS::ApiGatewayV2::Stage") {
		p := props(r)
		rs := p["DefaultRouteSettings"].(map[string]any)
		if rs["ThrottlingRateLimit"] != 15.0 || rs["ThrottlingBurstLimit"] != 30.0 {
			t.Errorf("throttling = %v", rs)
		}
		if p["AccessLogSettings"] == nil {
			t.Error("no access log on the stage")
		}
	}
}

func TestFunctions(t *testing.T) {
	s := base(t)
	fns := s.functions()
	if want := len(functions) + len(authFunctions) + len(otherFunctions); len(fns) != want {
		t.Fatalf("%d functions, want %d", len(fns), want)
	}
	roles := map[string]bool{}
	for _, name := range functions {
		p := props(fns[s.logicalID(t, "AWS::Lambda::Function", title(name))])
		if p["Runtime"] != "provided.al2023" || js(p["Architectures"]) != `["arm64"]` || p["Handler"] != "bootstrap" {
			t.Errorf("%s: runtime %v %v %v", name, p["Runtime"], p["Architectures"], p["Handler"])
		}
		if js(p["TracingConfig"]) != `{"Mode":"Active"}` {
			t.Errorf("%s: tracing %v", name, p["TracingConfig"])
		}
		if lc, _ := p["LoggingConfig"].(map[string]any); lc == nil || !strings.Contains(js(lc["LogGroup"]), title(name)+"Logs") {
			t.Errorf("%s: log group %v", name, p["LoggingConfig"])
		}
		env := p["Environment"].(map[string]any)["Variables"].(map[string]any)
		for _, k := range []string{"BULKFHIR_TABLE", "BULKFHIR_BUCKET", "BULKFHIR_RETENTION", "BULKFHIR_SOURCE_BUCKET"} {
			if env[k] == nil && !((name == "status" || name == "dispatch") && k == "BULKFHIR_SOURCE_BUCKET") {
				t.Errorf("%s: no %s", name, k)
			}
		}
		if (name == "status" || name == "dispatch") && env["BULKFHIR_SOURCE_BUCKET"] != nil {
			t.Errorf("%s: source bucket %v, but it reads no source", name, env["BULKFHIR_SOURCE_BUCKET"])
		}
		if (name == "kickoff" || name == "status" || name == "dispatch") != (env["BULKFHIR_STATE_MACHINE_ARN"] != nil) {
			t.Errorf("%s: state machine ARN = %v", name, env["BULKFHIR_STATE_MACHINE_ARN"])
		}
		role := js(p["Role"])
		if roles[role] {
			t.Errorf("%s shares a role", name)
		}
		roles[role] = true
		if to := p["Timeout"].(float64); (name == "kickoff" || name == "status") && to > 29 {
			t.Errorf("%s timeout %v exceeds API Gateway's 30 s", name, to)
		}
	}
	for id, r := range s.ofType("AWS::Logs::LogGroup") {
		if props(r)["RetentionInDays"] == nil {
			t.Errorf("log group %s keeps logs forever", id)
		}
	}
	for _, name := range functions {
		if mp := props(s.resources[s.logicalID(t, "AWS::IAM::Role", title(name)+"Role")])["ManagedPolicyArns"]; mp != nil {
			t.Errorf("%s role has managed policies: %v", name, mp)
		}
	}
}

// policyActions collects, per function, the actions of its role's policies
// and checks no statement uses a wildcard action or a bare "*" resource
// except for X-Ray.
func TestLeastPrivilegeRoles(t *testing.T) {
	s := base(t)
	want := map[string][]string{
		"kickoff":    {"dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:ListBucket", "secretsmanager:GetSecretValue", "states:StartExecution", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"status":     {"dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "s3:DeleteObject", "s3:ListBucket", "secretsmanager:GetSecretValue", "states:StartExecution", "states:StopExecution", "sts:AssumeRole", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"token":      {"dynamodb:GetItem", "dynamodb:PutItem", "logs:CreateLogStream", "logs:PutLogEvents", "secretsmanager:GetSecretValue", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"authorizer": {"logs:CreateLogStream", "logs:PutLogEvents", "secretsmanager:GetSecretValue", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"plan":       {"dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "s3:AbortMultipartUpload", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"export":     {"dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"finalize":   {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		// Signs the manifest's links: read the export files, nothing else.
		"downloadSigner": {"s3:GetObject"},
		// The retention sweep: read jobs, delete expired jobs' records
		// and files.
		"expire":   {"dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:Query", "logs:CreateLogStream", "logs:PutLogEvents", "s3:DeleteObject", "s3:ListBucket", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"fail":     {"dynamodb:GetItem", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "s3:DeleteObject", "s3:ListBucket", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
		"dispatch": {"dynamodb:ConditionCheckItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem", "logs:CreateLogStream", "logs:PutLogEvents", "states:StartExecution", "xray:PutTelemetryRecords", "xray:PutTraceSegments"},
	}
	for name, wantActions := range want {
		roleID := s.logicalID(t, "AWS::IAM::Role", title(name)+"Role")
		got := map[string]bool{}
		for _, pol := range s.ofType("AWS::IAM::Policy") {
			p := props(pol)
			if !strings.Contains(js(p["Roles"]), roleID) {
				continue
			}
			for _, st := range p["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				stm := st.(map[string]any)
				actions := toList(stm["Action"])
				for _, a := range actions {
					got[a] = true
					if strings.Contains(a, "*") {
						t.Errorf("%s: wildcard action %s", name, a)
					}
				}
				if js(stm["Resource"]) == `"*"` {
					for _, a := range actions {
						if !strings.HasPrefix(a, "xray:") {
							t.Errorf("%s: %s on every resource", name, a)
						}
					}
				}
			}
		}
		var gotList []string
		for a := range got {
			gotList = append(gotList, a)
		}
		sort.Strings(gotList)
		if strings.Join(gotList, ",") != strings.Join(wantActions, ",") {
			t.Errorf("%s actions:\n got %v\nwant %v", name, gotList, wantActions)
		}
	}
}

func toList(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, e.(string))
		}
		return out
	}
	return nil
}

func TestStateMachine(t *testing.T) {
	s := base(t)
	sms := s.ofType("AWS::StepFunctions::StateMachine")
	if len(sms) != 1 {
		t.Fatalf("%d state machines", len(sms))
	}
	for _, r := range sms {
		p := props(r)
		file, _ := os.ReadFile(DefinitionFile)
		if p["DefinitionString"] != string(file) {
			t.Error("the deployed definition is not the committed ASL file")
		}
		subs := p["DefinitionSubstitutions"].(map[string]any)
		for _, fn := range []string{"Plan", "Export", "Finalize", "Fail"} {
			if !strings.Contains(js(subs[fn+"FunctionArn"]), fn) {
				t.Errorf("%sFunctionArn = %v", fn, subs[fn+"FunctionArn"])
			}
		}
		if subs["MaxConcurrency"] != "7" {
			t.Errorf("MaxConcurrency = %v, want the prop (7)", subs["MaxConcurrency"])
		}
		if subs["TimeoutSeconds"] != "86400" || subs["ExportPrefix"] != "exports/" || !strings.Contains(js(subs["ExportBucket"]), "Exports") {
			t.Errorf("TimeoutSeconds, ExportPrefix, ExportBucket = %v, %v, %v", subs["TimeoutSeconds"], subs["ExportPrefix"], subs["ExportBucket"])
		}
		if !strings.Contains(string(file), `"Mode": "DISTRIBUTED"`) || !strings.Contains(string(file), `"ItemReader"`) {
			t.Error("the definition has no Distributed Map with an ItemReader")
		}
		for _, e := range []string{"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
			"Lambda.TooManyRequestsException", "Lambda.Unknown", "ClientExecutionTimeoutException"} {
			if n := strings.Count(string(file), `"`+e+`"`); n != 3 {
				t.Errorf("%s is retried by %d tasks, want all 3 (Plan, ExportChunk, Finalize)", e, n)
			}
		}
		lc := p["LoggingConfiguration"].(map[string]any)
		if lc["Level"] != "ALL" || lc["IncludeExecutionData"] != false {
			t.Errorf("logging = %v", lc)
		}
		if js(p["TracingConfiguration"]) != `{"Enabled":true}` {
			t.Errorf("tracing = %v", p["TracingConfiguration"])
		}
	}
}

// TestStateMachineRunsItsDistributedMap: the state machine's role may
// start and stop its own child executions and read the plan objects, and
// nothing more of S3 than the plan objects and its map run results.
func TestStateMachineRunsItsDistributedMap(t *testing.T) {
	s := base(t)
	smRole := s.logicalID(t, "AWS::IAM::Role", "ExportStateMachineRole")
	var stmts []string
	for _, pol := range s.ofType("AWS::IAM::Policy") {
		p := props(pol)
		if strings.Contains(js(p["Roles"]), smRole) {
			for _, st := range p["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				stmts = append(stmts, js(st))
			}
		}
	}
	all := strings.Join(stmts, "\n")
	for _, want := range []string{`"states:StartExecution"`, `"states:StopExecution"`, `/plan.json`, `mapruns/*`, `:stateMachine:`} {
		if !strings.Contains(all, want) {
			t.Errorf("state machine role lacks %s:\n%s", want, all)
		}
	}
	if strings.Contains(all, `"s3:*"`) || strings.Contains(all, `"states:*"`) {
		t.Errorf("wildcard actions:\n%s", all)
	}
}

// TestEndedExecutionsFailTheirJobs: FAILED, TIMED_OUT and ABORTED
// executions of this state machine go to the fail function.
func TestEndedExecutionsFailTheirJobs(t *testing.T) {
	s := base(t)
	rules := map[string]map[string]any{}
	for id, r := range s.ofType("AWS::Events::Rule") {
		// The dispatch function's rules are ops_test.go's.
		if !strings.Contains(js(props(r)["Targets"]), "Dispatch") {
			rules[id] = r
		}
	}
	delete(rules, s.logicalID(t, "AWS::Events::Rule", "ExpireSchedule")) // retention_test.go
	if len(rules) != 1 {
		t.Fatalf("%d rules", len(rules))
	}
	for _, r := range rules {
		p := props(r)
		pat := js(p["EventPattern"])
		for _, want := range []string{`"aws.states"`, settings.StatusChangeDetailType, `"FAILED"`, `"TIMED_OUT"`, `"ABORTED"`, `ExportStateMachine`} {
			if !strings.Contains(pat, want) {
				t.Errorf("pattern %s lacks %s", pat, want)
			}
		}
		if !strings.Contains(js(p["Targets"]), "Fail") {
			t.Errorf("targets = %s, want the fail function", js(p["Targets"]))
		}
	}
	if len(s.ofType("AWS::Lambda::Permission")) == 0 {
		t.Error("EventBridge may not invoke the fail function")
	}
}

func TestDataStores(t *testing.T) {
	s := base(t)
	for id, r := range s.ofType("AWS::DynamoDB::Table") {
		p := props(r)
		if p["BillingMode"] != "PAY_PER_REQUEST" || js(p["TimeToLiveSpecification"]) != `{"AttributeName":"expiresAt","Enabled":true}` {
			t.Errorf("table: %v %v", p["BillingMode"], p["TimeToLiveSpecification"])
		}
		if js(p["PointInTimeRecoverySpecification"]) != `{"PointInTimeRecoveryEnabled":true}` || p["SSESpecification"] == nil {
			t.Errorf("table: PITR %v SSE %v", p["PointInTimeRecoverySpecification"], p["SSESpecification"])
		}
		if strings.HasPrefix(id, "Jobs") && !strings.Contains(js(p["GlobalSecondaryIndexes"]), `"NonKeyAttributes":["status"]`) {
			t.Errorf("owner index = %s", js(p["GlobalSecondaryIndexes"]))
		}
		if r["DeletionPolicy"] != "Delete" {
			t.Errorf("table %s deletion policy %v (retainData is off)", id, r["DeletionPolicy"])
		}
	}
	exports := props(s.resources[s.logicalID(t, "AWS::S3::Bucket", "Exports")])
	if js(exports["PublicAccessBlockConfiguration"]) != `{"BlockPublicAcls":true,"BlockPublicPolicy":true,"IgnorePublicAcls":true,"RestrictPublicBuckets":true}` {
		t.Errorf("public access block = %v", exports["PublicAccessBlockConfiguration"])
	}
	if !strings.Contains(js(exports["BucketEncryption"]), "AES256") {
		t.Errorf("encryption = %v", exports["BucketEncryption"])
	}
	rules := js(exports["LifecycleConfiguration"])
	// The sweep deletes at Expires; the lifecycle backstop covers the
	// longest job plus the retention: 24h + 30h → three whole days.
	if !strings.Contains(rules, `"ExpirationInDays":3`) || !strings.Contains(rules, `"AbortIncompleteMultipartUpload":{"DaysAfterInitiation":1}`) {
		t.Errorf("lifecycle = %s", rules)
	}
	for _, r := range s.functions() {
		if v := props(r)["Environment"].(map[string]any)["Variables"].(map[string]any)["BULKFHIR_RETENTION"]; v != nil && v != "30h0m0s" {
			t.Errorf("a function's retention = %v, want the one setting (30h)", v)
		}
	}
	tls := false
	for _, r := range s.ofType("AWS::S3::BucketPolicy") {
		if strings.Contains(js(props(r)["Bucket"]), "Exports") && strings.Contains(js(r), `"aws:SecureTransport":"false"`) {
			tls = true
		}
	}
	if !tls {
		t.Error("the export bucket does not deny non-TLS requests")
	}
}

func TestRetentionDays(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want float64
	}{{2 * time.Hour, 1}, {24 * time.Hour, 1}, {25 * time.Hour, 2}, {7 * 24 * time.Hour, 7}} {
		if got := RetentionDays(tc.in); got != tc.want {
			t.Errorf("RetentionDays(%s) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestOutputs(t *testing.T) {
	s := base(t)
	for _, o := range []string{"FhirBaseUrl", "ExportBucket", "SourceBucket", "JobsTable", "StateMachineArn"} {
		if s.outputs[o] == nil {
			t.Errorf("no output %s", o)
		}
	}
	if !strings.Contains(js(s.outputs["FhirBaseUrl"]), "/fhir") {
		t.Errorf("FhirBaseUrl = %s", js(s.outputs["FhirBaseUrl"]))
	}
}

func TestCdkNagHasNoUnsuppressedErrors(t *testing.T) {
	if errs := base(t).errors; len(errs) > 0 {
		t.Errorf("cdk-nag errors:\n%s", strings.Join(errs, "\n"))
	}
	// The production variant: JWT authorizer, KMS, retained data, access logs.
	prod := synth(t, StackProps{BuildDir: fakeBuild(t), JwtIssuer: "https://auth.example.org", JwtAudience: "bulkfhir", JwtTokenURL: "https://auth.example.org/token",
		KMS: true, RetainData: true, AccessLogsBucket: "my-access-logs", SourceBucket: "my-data", SourcePrefix: "fhir/"}, nil)
	if len(prod.errors) > 0 {
		t.Errorf("cdk-nag errors (production variant):\n%s", strings.Join(prod.errors, "\n"))
	}
	for _, r := range prod.ofType("AWS::ApiGatewayV2::Route") {
		if props(r)["AuthorizationType"] != "JWT" {
			t.Errorf("route %v is not behind the JWT authorizer", props(r)["RouteKey"])
		}
	}
	for id, r := range prod.functions() {
		env := props(r)["Environment"].(map[string]any)["Variables"].(map[string]any)
		if strings.HasPrefix(id, "Kickoff") && (env["BULKFHIR_AUTH"] != "gateway" || env["BULKFHIR_TOKEN_URL"] != "https://auth.example.org/token") {
			t.Errorf("kickoff with an outside issuer: auth %v, token URL %v", env["BULKFHIR_AUTH"], env["BULKFHIR_TOKEN_URL"])
		}
	}
	if n := len(prod.ofType("AWS::SecretsManager::Secret")); n != 0 {
		t.Errorf("an outside issuer's stack has %d token secrets", n)
	}
	for _, r := range prod.ofType("AWS::DynamoDB::Table") {
		if r["DeletionPolicy"] != "Retain" || !strings.Contains(js(props(r)["SSESpecification"]), "KMS") {
			t.Errorf("table: %v %v", r["DeletionPolicy"], props(r)["SSESpecification"])
		}
	}
	// The check can fail: a bucket without TLS enforcement is reported.
	app := awscdk.NewApp(nil)
	bad := awscdk.NewStack(app, jsii.String("bad"), nil)
	awss3.NewBucket(bad, jsii.String("Open"), &awss3.BucketProps{})
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(nil))
	assertions.Template_FromStack(bad, nil)
	if n := len(*assertions.Annotations_FromStack(bad).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String("AwsSolutions-S10.*")))); n == 0 {
		t.Error("cdk-nag reported nothing for a bucket without TLS enforcement")
	}
}

// TestSamAssetPaths synthesizes without asset staging, as make synth does
// for SAM, and checks each function's asset path is its build folder.
func TestSamAssetPaths(t *testing.T) {
	build, err := filepath.Abs("../build")
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range functions {
		if _, err := os.Stat(filepath.Join(build, fn, "bootstrap")); err != nil {
			t.Fatalf("run `make lambdas` first: %v", err)
		}
	}
	s := synth(t, StackProps{BuildDir: "../build"}, map[string]any{"aws:cdk:disable-asset-staging": true, "aws:cdk:enable-asset-metadata": true})
	for _, fn := range functions {
		r := s.resources[s.logicalID(t, "AWS::Lambda::Function", title(fn))]
		meta, _ := r["Metadata"].(map[string]any)
		path, _ := meta["aws:asset:path"].(string)
		if path != filepath.Join(build, fn) {
			t.Errorf("%s: aws:asset:path = %q, want %q", fn, path, filepath.Join(build, fn))
		}
		if meta["aws:asset:property"] != "Code" {
			t.Errorf("%s: aws:asset:property = %v", fn, meta["aws:asset:property"])
		}
	}
}

// TestUpstreamSource: with a FHIR server as the source there is no source
// bucket; the functions that read the source get its URL and may read the
// credentials secret (and HealthLake, with SigV4), and the others may not.
func TestUpstreamSource(t *testing.T) {
	const secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:upstream-AbCdEf"
	s := synth(t, StackProps{BuildDir: fakeBuild(t), SourceURL: "https://healthlake.us-east-1.amazonaws.com/datastore/abc/r4/",
		SourceSecretArn: secret, SourceSigV4Region: "us-east-1"}, nil)
	if len(s.errors) > 0 {
		t.Errorf("cdk-nag errors:\n%s", strings.Join(s.errors, "\n"))
	}
	if len(s.ofType("AWS::S3::Bucket")) != 1 {
		t.Errorf("%d buckets, want the export bucket only", len(s.ofType("AWS::S3::Bucket")))
	}
	readers := map[string]bool{"kickoff": true, "plan": true, "export": true}
	fns := s.functions()
	for _, name := range functions {
		p := props(fns[s.logicalID(t, "AWS::Lambda::Function", title(name))])
		env := p["Environment"].(map[string]any)["Variables"].(map[string]any)
		configured := name != "status" && name != "dispatch" // they read no source
		if configured != (env["BULKFHIR_SOURCE_URL"] != nil) || env["BULKFHIR_SOURCE_BUCKET"] != nil || configured != (env["BULKFHIR_SOURCE_SIGV4_REGION"] == "us-east-1") {
			t.Errorf("%s: source env %v", name, env)
		}
		roleID := s.logicalID(t, "AWS::IAM::Role", title(name)+"Role")
		secretRead, healthLake := false, false
		for _, pol := range s.ofType("AWS::IAM::Policy") {
			pp := props(pol)
			if !strings.Contains(js(pp["Roles"]), roleID) {
				continue
			}
			for _, st := range pp["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				stm := st.(map[string]any)
				for _, a := range toList(stm["Action"]) {
					if a == "secretsmanager:GetSecretValue" {
						secretRead = secretRead || js(stm["Resource"]) == `"`+secret+`"`
					}
					if a == "healthlake:SearchWithGet" {
						healthLake = true
					}
					if strings.HasPrefix(a, "s3:") && strings.Contains(js(stm["Resource"]), "Source") {
						t.Errorf("%s: reads a source bucket", name)
					}
				}
			}
		}
		if secretRead != readers[name] || healthLake != readers[name] {
			t.Errorf("%s: reads the secret %v, HealthLake %v; want %v", name, secretRead, healthLake, readers[name])
		}
	}
	ctx := map[string]any{"bulkfhir:sourceUrl": "https://x", "bulkfhir:sourceBucket": "b"}
	if _, err := propsFromContext(func(k string) any { return ctx[k] }); err == nil {
		t.Error("a FHIR server and a source bucket together were accepted")
	}
}

// TestVpcForAPrivateUpstream: the functions that read the source run in the
// given subnets with the ENI permissions Lambda needs; the others do not.
func TestVpcForAPrivateUpstream(t *testing.T) {
	s := synth(t, StackProps{BuildDir: fakeBuild(t), SourceURL: "https://fhir.internal.example/r4",
		VpcSubnetIds: []string{"subnet-a", "subnet-b"}, VpcSecurityGroupIds: []string{"sg-1"}}, nil)
	if len(s.errors) > 0 {
		t.Errorf("cdk-nag errors:\n%s", strings.Join(s.errors, "\n"))
	}
	inVPC := map[string]bool{"kickoff": true, "plan": true, "export": true}
	fns := s.functions()
	for _, name := range functions {
		p := props(fns[s.logicalID(t, "AWS::Lambda::Function", title(name))])
		got := js(p["VpcConfig"])
		want := `{"SecurityGroupIds":["sg-1"],"SubnetIds":["subnet-a","subnet-b"]}`
		if inVPC[name] != (got == want) {
			t.Errorf("%s: VpcConfig %s", name, got)
		}
		roleID := s.logicalID(t, "AWS::IAM::Role", title(name)+"Role")
		eni := false
		for _, pol := range s.ofType("AWS::IAM::Policy") {
			pp := props(pol)
			if strings.Contains(js(pp["Roles"]), roleID) && strings.Contains(js(pp["PolicyDocument"]), "ec2:CreateNetworkInterface") {
				eni = true
			}
		}
		if eni != inVPC[name] {
			t.Errorf("%s: ENI permissions %v", name, eni)
		}
	}
	ctx := map[string]any{"bulkfhir:vpcSubnetIds": "subnet-a"}
	if _, err := propsFromContext(func(k string) any { return ctx[k] }); err == nil {
		t.Error("subnets without security groups were accepted")
	}
}

// TestAuthorization: the default stack authenticates every route with
// bulkfhir's tokens except the token endpoint and discovery; an open API
// needs the explicit anonymous opt-in.
func TestAuthorization(t *testing.T) {
	s := base(t)
	authorizers := s.ofType("AWS::ApiGatewayV2::Authorizer")
	if len(authorizers) != 1 {
		t.Fatalf("authorizers = %v", authorizers)
	}
	var authorizerID string
	for id, r := range authorizers {
		authorizerID = id
		p := props(r)
		if p["AuthorizerType"] != "REQUEST" || !strings.Contains(js(p["AuthorizerUri"]), "Authorizer") ||
			js(p["IdentitySource"]) != `["$request.header.Authorization"]` || p["AuthorizerResultTtlInSeconds"] != 300.0 {
			t.Errorf("authorizer = %s", js(p))
		}
	}
	for _, r := range s.ofType("AWS::ApiGatewayV2::Route") {
		p := props(r)
		key := p["RouteKey"].(string)
		public := key == "POST /fhir/auth/token" || key == "GET /fhir/.well-known/smart-configuration" || key == "GET /fhir/metadata"
		if public {
			if p["AuthorizationType"] != nil && p["AuthorizationType"] != "NONE" {
				t.Errorf("route %s needs a token to get a token: %v", key, p["AuthorizationType"])
			}
			continue
		}
		if p["AuthorizationType"] != "CUSTOM" || !strings.Contains(js(p["AuthorizerId"]), authorizerID) {
			t.Errorf("route %s is not behind bulkfhir's authorizer: %v %v", key, p["AuthorizationType"], p["AuthorizerId"])
		}
	}
	// The API functions verify tokens themselves too, with the same key.
	fns := s.functions()
	for _, name := range []string{"kickoff", "status"} {
		env := props(fns[s.logicalID(t, "AWS::Lambda::Function", title(name))])["Environment"].(map[string]any)["Variables"].(map[string]any)
		if env["BULKFHIR_AUTH"] != "bulkfhir" || !strings.Contains(js(env["BULKFHIR_TOKEN_SECRET_ARN"]), "TokenKey") {
			t.Errorf("%s: auth env %v %v", name, env["BULKFHIR_AUTH"], env["BULKFHIR_TOKEN_SECRET_ARN"])
		}
	}
	authTable := props(s.resources[s.logicalID(t, "AWS::DynamoDB::Table", "Auth")])
	if !strings.Contains(js(authTable["TimeToLiveSpecification"]), `"AttributeName":"expiresAt"`) {
		t.Errorf("auth table TTL = %v", authTable["TimeToLiveSpecification"])
	}
	if s.outputs["AuthTableName"] == nil {
		t.Error("no AuthTableName output")
	}

	// An open API only with the opt-in.
	func() {
		defer func() {
			r := recover()
			if r == nil || !strings.Contains(fmt.Sprint(r), "allowAnonymous") {
				t.Errorf("an API without authentication was synthesized without the opt-in (recovered %v)", r)
			}
		}()
		synth(t, StackProps{BuildDir: fakeBuild(t), Auth: authNone}, nil)
	}()
	if _, err := propsFromContext(func(k string) any { return map[string]any{"bulkfhir:auth": "none"}[k] }); err == nil {
		t.Error("context bulkfhir:auth=none without bulkfhir:allowAnonymous was accepted")
	}
	p, err := propsFromContext(func(k string) any { return map[string]any{"bulkfhir:allowAnonymous": "true"}[k] })
	if err != nil || !p.AllowAnonymous {
		t.Fatalf("allowAnonymous context: %+v %v", p, err)
	}
	p.BuildDir = fakeBuild(t)
	open := synth(t, p, nil)
	if len(open.errors) > 0 {
		t.Errorf("cdk-nag errors (anonymous opt-in):\n%s", strings.Join(open.errors, "\n"))
	}
	for _, r := range open.ofType("AWS::ApiGatewayV2::Route") {
		if at := props(r)["AuthorizationType"]; at != nil && at != "NONE" {
			t.Errorf("anonymous stack route %v has authorization %v", props(r)["RouteKey"], at)
		}
	}
	if n := len(open.ofType("AWS::SecretsManager::Secret")); n != 0 {
		t.Errorf("the anonymous stack has %d token secrets", n)
	}
}

// TestPatientIndexGrants: plan may read and write the S3 source's patient
// indexes, export only read them, both list only their prefix, no other
// function touches them, and a lifecycle rule expires them.
func TestPatientIndexGrants(t *testing.T) {
	s := base(t)
	want := map[string]string{"plan": "s3:GetObject,s3:ListBucket,s3:PutObject", "export": "s3:GetObject,s3:ListBucket"}
	for _, name := range []string{"kickoff", "status", "plan", "export", "finalize", "fail"} {
		roleID := s.logicalID(t, "AWS::IAM::Role", title(name)+"Role")
		got := map[string]bool{}
		for _, pol := range s.ofType("AWS::IAM::Policy") {
			p := props(pol)
			if !strings.Contains(js(p["Roles"]), roleID) {
				continue
			}
			for _, st := range p["PolicyDocument"].(map[string]any)["Statement"].([]any) {
				stm := st.(map[string]any)
				if strings.Contains(js(stm["Resource"]), "patient-index/") || strings.Contains(js(stm["Condition"]), "patient-index/") {
					for _, a := range toList(stm["Action"]) {
						got[a] = true
					}
				}
			}
		}
		var list []string
		for a := range got {
			list = append(list, a)
		}
		sort.Strings(list)
		if strings.Join(list, ",") != want[name] {
			t.Errorf("%s on patient-index/: %v, want %q", name, list, want[name])
		}
	}
	var rules string
	for _, b := range s.ofType("AWS::S3::Bucket") {
		rules += js(props(b)["LifecycleConfiguration"])
	}
	if !strings.Contains(rules, `"Prefix":"patient-index/"`) {
		t.Errorf("no lifecycle rule for patient-index/: %s", rules)
	}
}
