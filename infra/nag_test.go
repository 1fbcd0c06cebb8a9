package main

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"
)

// nagErrors synthesizes the stack with the AwsSolutions, HIPAA Security and
// NIST 800-53 R5 packs and returns their unsuppressed errors.
func nagErrors(t *testing.T, props StackProps) []string {
	t.Helper()
	app := awscdk.NewApp(&awscdk.AppProps{Context: &map[string]any{}})
	s := NewStack(app, "prod", props)
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(nil))
	awscdk.Aspects_Of(app).Add(cdknag.NewHIPAASecurityChecks(nil))
	awscdk.Aspects_Of(app).Add(cdknag.NewNIST80053R5Checks(nil))
	assertions.Template_FromStack(s.Stack, nil)
	var out []string
	for _, m := range *assertions.Annotations_FromStack(s.Stack).FindError(jsii.String("*"), assertions.Match_StringLikeRegexp(jsii.String(".*"))) {
		out = append(out, fmt.Sprintf("%s: %v", *m.Id, m.Entry.Data))
	}
	sort.Strings(out)
	return out
}

func productionProps(t *testing.T) StackProps {
	return StackProps{BuildDir: fakeBuild(t), OpsProps: OpsProps{Profile: profileProduction, AlarmEmail: "ops@example.org"}}
}

// TestProductionProfilePassesHIPAAAndNIST: the production profile has no
// unsuppressed finding of the HIPAA Security and NIST 800-53 R5 packs (nor
// AwsSolutions); each accepted one is suppressed with its reason
// (suppress.go, nagpacks.go).
func TestProductionProfilePassesHIPAAAndNIST(t *testing.T) {
	for _, api := range []string{apiHTTP, apiREST} {
		p := productionProps(t)
		p.ApiType = api
		if errs := nagErrors(t, p); len(errs) > 0 {
			t.Errorf("%s API: %d unsuppressed cdk-nag errors in the production profile:\n%s", api, len(errs), strings.Join(errs, "\n"))
		}
	}
}

// TestHIPAAAndNISTCanFail: the same packs on the default profile (no KMS)
// report the unencrypted log groups: the check is live, and the profile is
// what passes it.
func TestHIPAAAndNISTCanFail(t *testing.T) {
	errs := strings.Join(nagErrors(t, StackProps{BuildDir: fakeBuild(t)}), "\n")
	for _, rule := range []string{"HIPAA.Security-CloudWatchLogGroupEncrypted", "NIST.800.53.R5-CloudWatchLogGroupEncrypted"} {
		if !strings.Contains(errs, rule) {
			t.Errorf("the default stack has no %s finding; the check may not run:\n%s", rule, errs)
		}
	}
}

// TestProductionProfile: one setting turns on KMS (bucket, table, every log
// group, the alarm topic), retained data and server access logs into a
// bucket the stack creates; it refuses an API without authentication and a
// stack without an alarm email.
func TestProductionProfile(t *testing.T) {
	s := synth(t, productionProps(t), nil)
	key := s.logicalID(t, "AWS::KMS::Key", "DataKey")
	groups := s.ofType("AWS::Logs::LogGroup")
	if len(groups) < len(functions)+1 {
		t.Fatalf("%d log groups", len(groups))
	}
	for id, g := range groups {
		if !strings.Contains(js(props(g)["KmsKeyId"]), key) {
			t.Errorf("log group %s is not encrypted with the stack's key: %v", id, props(g)["KmsKeyId"])
		}
	}
	for _, r := range s.ofType("AWS::DynamoDB::Table") {
		if r["DeletionPolicy"] != "Retain" || !strings.Contains(js(props(r)["SSESpecification"]), "KMS") {
			t.Errorf("table: %v %v", r["DeletionPolicy"], props(r)["SSESpecification"])
		}
	}
	logs := s.logicalID(t, "AWS::S3::Bucket", "AccessLogs")
	exports := props(s.resources[s.logicalID(t, "AWS::S3::Bucket", "Exports")])
	if !strings.Contains(js(exports["LoggingConfiguration"]), logs) || !strings.Contains(js(exports["BucketEncryption"]), "aws:kms") {
		t.Errorf("exports bucket: logging %v, encryption %v", exports["LoggingConfiguration"], exports["BucketEncryption"])
	}
	if !strings.Contains(js(props(s.resources[s.logicalID(t, "AWS::SNS::Topic", "AlarmTopic")])["KmsMasterKeyId"]), key) {
		t.Error("the alarm topic is not encrypted with the stack's key")
	}
	for name, p := range map[string]StackProps{
		"anonymous":   {OpsProps: OpsProps{Profile: profileProduction, AlarmEmail: "ops@example.org"}, AllowAnonymous: true, Auth: authNone},
		"no email":    {OpsProps: OpsProps{Profile: profileProduction}},
		"bad profile": {OpsProps: OpsProps{Profile: "prod"}},
	} {
		if err := p.withDefaults().check(); err == nil {
			t.Errorf("%s: the production profile accepted %+v", name, p.OpsProps)
		}
	}
	// A named access logs bucket is used instead of a new one.
	named := productionProps(t)
	named.AccessLogsBucket = "org-access-logs"
	n := synth(t, named, nil)
	for id := range n.ofType("AWS::S3::Bucket") {
		if strings.HasPrefix(id, "AccessLogs") {
			t.Errorf("a logs bucket %s was created though bulkfhir:accessLogsBucket names one", id)
		}
	}
}
