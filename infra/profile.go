package main

import (
	"errors"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
)

// profileProduction is bulkfhir:profile=production: one setting for a
// deployment that holds PHI.
const profileProduction = "production"

// applyProfile turns on what the production profile means: the stack's
// KMS key (bucket, table, log groups, alarm topic), retained data and S3
// server access logs (into the given bucket, or one the stack creates).
// Authentication and an alarm email are required (checkProfile): the
// profile never turns a setting off that the operator turned on.
func (p StackProps) applyProfile() StackProps {
	if p.Profile != profileProduction {
		return p
	}
	p.KMS = true
	p.RetainData = true
	if p.AccessLogsBucket == "" {
		p.createAccessLogs = true
	}
	// The access logs above are also the record of presigned downloads,
	// which bypass the API (docs/downloads.md); the download mode stays the
	// operator's choice.
	return p
}

var (
	errProfile        = errors.New("bulkfhir:profile must be empty or production")
	errProdAnonymous  = errors.New("bulkfhir:profile=production requires authentication: remove bulkfhir:allowAnonymous (and auth=none)")
	errProdAlarmEmail = errors.New("bulkfhir:profile=production requires bulkfhir:alarmEmail: someone must hear of a failed or stuck export")
)

// checkProfile refuses a production profile without authentication or
// without an alarm email.
func (p StackProps) checkProfile() error {
	switch p.Profile {
	case "":
		return nil
	case profileProduction:
	default:
		return errProfile
	}
	if mode, _ := p.authMode(); mode == authNone || p.AllowAnonymous {
		return errProdAnonymous
	}
	if p.AlarmEmail == "" {
		return errProdAlarmEmail
	}
	return nil
}

// accessLogs is the bucket S3 server access logs go to: the one named by
// bulkfhir:accessLogsBucket, one the stack creates (production profile
// without one), or nil. Server access logs cannot be delivered to an SSE-KMS
// bucket, so the created one is SSE-S3, private, TLS only, versioned and
// retained.
func (s *Stack) accessLogs(props StackProps) awss3.IBucket {
	switch {
	case props.AccessLogsBucket != "":
		return awss3.Bucket_FromBucketName(s.Stack, jsii.String("AccessLogs"), jsii.String(props.AccessLogsBucket))
	case props.createAccessLogs:
		b := awss3.NewBucket(s.Stack, jsii.String("AccessLogs"), &awss3.BucketProps{
			BlockPublicAccess: awss3.BlockPublicAccess_BLOCK_ALL(),
			EnforceSSL:        jsii.Bool(true),
			Encryption:        awss3.BucketEncryption_S3_MANAGED,
			// S3 delivers server access logs through the log delivery
			// group's ACL here (the stack does not set the bucket-policy
			// feature flag), which needs ObjectWriter.
			ObjectOwnership: awss3.ObjectOwnership_OBJECT_WRITER,
			Versioned:       jsii.Bool(true),
			RemovalPolicy:   awscdk.RemovalPolicy_RETAIN,
		})
		s.AccessLogsBucket = b
		return b
	}
	return nil
}

// encryptLogs encrypts every log group of the stack with its KMS key (when
// kms is on), and lets CloudWatch Logs use the key for this account's log
// groups only.
func (s *Stack) encryptLogs(key awskms.IKey) {
	if key == nil {
		return
	}
	k, ok := key.(awskms.Key)
	if !ok {
		return
	}
	logsArn := join(jsii.String("arn:"), awscdk.Aws_PARTITION(), jsii.String(":logs:"), awscdk.Aws_REGION(), jsii.String(":"),
		awscdk.Aws_ACCOUNT_ID(), jsii.String(":log-group:*"))
	k.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchLogsOfThisAccount"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(join(jsii.String("logs."), awscdk.Aws_REGION(), jsii.String(".amazonaws.com")), nil)},
		Actions:    jsii.Strings("kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{"ArnLike": map[string]any{"kms:EncryptionContext:aws:logs:arn": logsArn}},
	}), jsii.Bool(true))
	for _, c := range *s.Stack.Node().FindAll(constructs.ConstructOrder_PREORDER) {
		if lg, ok := c.(awslogs.CfnLogGroup); ok {
			lg.SetKmsKeyId(k.KeyArn())
			lg.Node().AddDependency(k)
		}
	}
}
