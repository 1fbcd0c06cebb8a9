package main

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// serviceOf maps a CloudFormation resource type to the LocalStack service
// that must be enabled to create it. A type missing here fails the test:
// add it (and the service to the compose file) when the stack grows.
var serviceOf = map[string]string{
	"AWS::ApiGateway":             "apigateway",
	"AWS::ApiGatewayV2":           "apigatewayv2",
	"AWS::DynamoDB":               "dynamodb",
	"AWS::EC2":                    "ec2",
	"AWS::Events":                 "events",
	"AWS::IAM":                    "iam",
	"AWS::KMS":                    "kms",
	"AWS::Lambda":                 "lambda",
	"AWS::Logs":                   "logs",
	"AWS::S3":                     "s3",
	"AWS::SecretsManager":         "secretsmanager",
	"AWS::SNS":                    "sns",
	"AWS::SQS":                    "sqs",
	"AWS::SSM":                    "ssm",
	"AWS::StepFunctions":          "stepfunctions",
	"AWS::Pipes":                  "pipes",
	"AWS::Scheduler":              "scheduler",
	"AWS::CloudWatch":             "cloudwatch",
	"AWS::CDK::Metadata":          "",
	"Custom::":                    "lambda", // CDK custom resources run as functions
	"AWS::CloudFormation":         "cloudformation",
	"AWS::ElasticLoadBalancingV2": "elbv2",
}

// deployServices are used by cdklocal bootstrap and deploy themselves
// (the CDKToolkit stack: S3 staging bucket, ECR repository, IAM roles,
// SSM version parameter; CloudFormation and STS to deploy), and X-Ray for
// active tracing.
var deployServices = []string{"cloudformation", "ecr", "iam", "s3", "ssm", "sts"}

// servicesFor derives the LocalStack services a template needs.
func servicesFor(resources map[string]map[string]any) ([]string, error) {
	set := map[string]bool{}
	for _, s := range deployServices {
		set[s] = true
	}
	var unknown []string
	for id, r := range resources {
		typ, _ := r["Type"].(string)
		svc, ok := "", false
		for prefix, s := range serviceOf {
			if typ == prefix || strings.HasPrefix(typ, prefix) && (strings.HasSuffix(prefix, ":") || strings.HasPrefix(typ, prefix+"::")) {
				svc, ok = s, true
				break
			}
		}
		if !ok {
			unknown = append(unknown, id+" ("+typ+")")
			continue
		}
		if svc != "" {
			set[svc] = true
		}
		if strings.Contains(js(props(r)["TracingConfig"]), "Active") || props(r)["TracingEnabled"] == true {
			set["xray"] = true
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("no LocalStack service known for %s: add it to serviceOf", strings.Join(unknown, ", "))
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, nil
}

// composeServices reads SERVICES' default from the compose file.
func composeServices(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("../localstack/docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`SERVICES: \$\{LOCALSTACK_SERVICES:-([a-z0-9,]+)\}`).FindSubmatch(b)
	if m == nil {
		t.Fatal("docker-compose.yml: no SERVICES: ${LOCALSTACK_SERVICES:-…} default")
	}
	out := map[string]bool{}
	for _, s := range strings.Split(string(m[1]), ",") {
		out[s] = true
	}
	return out
}

func missing(need []string, have map[string]bool) []string {
	var out []string
	for _, s := range need {
		if !have[s] {
			out = append(out, s)
		}
	}
	return out
}

// TestComposeServicesCoverTheTemplate: the compose file enables every
// service the synthesized stack uses, derived from the template's resource
// types: the REST API stack with the compose list as it is (free edition),
// the HTTP API stack with apigatewayv2 added (what up.sh does with a token).
func TestComposeServicesCoverTheTemplate(t *testing.T) {
	have := composeServices(t)
	build := fakeBuild(t)
	for _, api := range []string{apiREST, apiHTTP} {
		s := synth(t, StackProps{BuildDir: build, ApiType: api}, nil)
		need, err := servicesFor(s.resources)
		if err != nil {
			t.Fatal(err)
		}
		with := map[string]bool{}
		for k := range have {
			with[k] = true
		}
		if api == apiHTTP {
			if have["apigatewayv2"] {
				t.Error("the compose default enables apigatewayv2, which the free edition lacks: up.sh adds it for the HTTP API")
			}
			with["apigatewayv2"] = true
		}
		if m := missing(need, with); len(m) > 0 {
			t.Errorf("apiType %s: docker-compose.yml SERVICES lacks %v (the template needs %v)", api, m, need)
		}
	}
	// Negative control: a stack that grows a queue (or an EventBridge rule,
	// with events removed from the list) is caught.
	grown := map[string]map[string]any{"Q": {"Type": "AWS::SQS::Queue"}, "R": {"Type": "AWS::Events::Rule"}}
	need, err := servicesFor(grown)
	if err != nil {
		t.Fatal(err)
	}
	without := map[string]bool{}
	for k := range have {
		without[k] = k != "events"
	}
	if m := missing(need, without); strings.Join(m, ",") != "events,sqs" {
		t.Errorf("negative control: missing = %v, want [events sqs]", m)
	}
	if _, err := servicesFor(map[string]map[string]any{"X": {"Type": "AWS::Glue::Job"}}); err == nil || !strings.Contains(err.Error(), "AWS::Glue::Job") {
		t.Errorf("an unknown resource type passed: %v", err)
	}
}
