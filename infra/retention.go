package main

import (
	"math"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/jsii-runtime-go"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// sweepEvery is how often the expire function runs: files and job records
// outlive their Expires by at most this (plus the function's run).
const sweepEvery = 5 * time.Minute

// BackstopDays is the S3 lifecycle expiration kept behind the sweep: whole
// days, rounded up, covering the longest a job may run plus its retention,
// so it can never delete a file of a job that is running or not yet
// expired (an object is at most MaxJobDuration + Retention old when its
// job expires).
func BackstopDays(maxJobDuration, retention time.Duration) float64 {
	return math.Max(1, math.Ceil((maxJobDuration+retention).Hours()/24))
}

// expiry adds the expire function (retention.Sweep) and its schedule.
func (s *Stack) expiry(props StackProps) {
	s.newFunction(function{"expire", 256, awscdk.Duration_Minutes(jsii.Number(5))}, props, map[string]*string{
		settings.EnvTable:        s.Table.TableName(),
		settings.EnvBucket:       s.Bucket.BucketName(),
		settings.EnvBucketPrefix: jsii.String(exportPrefix),
	})
	// Read a job, list and delete its records (conditional on its status
	// and expiry); list the job folders and delete their objects.
	s.allow("expire", []string{"dynamodb:GetItem", "dynamodb:Query", "dynamodb:DeleteItem"}, s.Table.TableArn())
	s.allow("expire", []string{"s3:DeleteObject"}, join(s.Bucket.BucketArn(), jsii.String("/"+exportPrefix+"*")))
	s.Roles["expire"].AddToPolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Actions:    jsii.Strings("s3:ListBucket"),
		Resources:  &[]*string{s.Bucket.BucketArn()},
		Conditions: &map[string]any{"StringLike": map[string]any{"s3:prefix": []string{exportPrefix + "*"}}},
	}))
	if key := s.Bucket.EncryptionKey(); key != nil {
		s.allow("expire", []string{"kms:Decrypt"}, key.KeyArn())
	}
	// One sweep at a time is plenty (a sweep is safe to repeat); a
	// throttled schedule event is retried.
	s.Functions["expire"].Node().DefaultChild().(awslambda.CfnFunction).SetReservedConcurrentExecutions(jsii.Number(1))
	awsevents.NewRule(s.Stack, jsii.String("ExpireSchedule"), &awsevents.RuleProps{
		Description: jsii.String("bulkfhir: delete the files and records of expired exports"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(sweepEvery.Minutes()))),
		Targets: &[]awsevents.IRuleTarget{awseventstargets.NewLambdaFunction(s.Functions["expire"], &awseventstargets.LambdaFunctionProps{
			RetryAttempts: jsii.Number(2),
		})},
	})
}
