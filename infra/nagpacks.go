package main

import (
	"github.com/aws/aws-cdk-go/awscdk/v2/awss3"
	"github.com/aws/constructs-go/constructs/v10"
)

// Reasons for the HIPAA Security and NIST 800-53 R5 findings the stack
// accepts (the AwsSolutions ones are in suppress.go). Each is added for both
// packs, whose rules of the same name check the same thing.
const (
	reasonInlinePolicy = "Each function and the state machine have a role of their own with one inline policy listing exactly the actions and resources of this stack they use (TestLeastPrivilegeRoles); a managed policy would be shared between roles and could only be as wide or wider."
	reasonNoVPC        = "The functions call only AWS service endpoints (DynamoDB, S3, Step Functions, Secrets Manager) and, when configured, the upstream FHIR server; they serve no network resource a VPC would protect. A private upstream puts the source readers in a VPC (bulkfhir:vpcSubnetIds)."
	reasonNoDLQ        = "Invoked synchronously (API Gateway, the state machine's tasks, whose Retry and Catch handle failures) or by EventBridge with retries (fail, dispatch), whose missed events the minute sweep and the ExportStuck alarm catch; a DLQ applies only to asynchronous invocations and would hold job ids no one reads."
	reasonNoReplicate  = "Exports are short-lived copies derived from the source (kept for the retention period, hours): replicating them would copy PHI to a second place with no recovery value; the source of truth is the upstream or the source bucket."
	reasonNoVersions   = "Export files are written once under a new job id and expire after the retention period; versioning would keep PHI past its expiry (noncurrent versions) with no recovery value."
	reasonLogsSSE      = "S3 server access logs can only be delivered to a bucket with SSE-S3 (AES256) default encryption, not SSE-KMS."
	reasonLogsOfLogs   = "This is the access logs bucket; logging it into itself would loop."
	reasonLogsReplica  = "Access logs stay in this account's region with the data they describe; replicate them with your organisation's log archive if required."
	reasonBackupPlan   = "Point-in-time recovery is on for the table; its items expire within the retention period (TTL), so an AWS Backup plan would keep PHI-adjacent records past their expiry."
	reasonNoAPICache   = "Every answer is for one client and one job (status, a manifest of freshly presigned links): a stage cache would serve one client's answer to another and keep PHI-bearing links; the API is never cached."
	reasonBackendCert  = "The integrations are Lambda proxy integrations, not HTTP backends: there is no backend for a client certificate to authenticate to."
	reasonWAF          = "Authorization (bulkfhir tokens or the JWT authorizer) and the stage's throttling guard the API; attach your organisation's WAF web ACL (or Firewall Manager policy) to the stage where one is required."
	reasonSourceBucket = "The source bucket is created for convenience (upload NDJSON here); for production data bring your own bucket with your organisation's logging, versioning, replication and key (bulkfhir:sourceBucket)."
)

// packs are the rule prefixes of the two packs.
var packs = []string{"HIPAA.Security-", "NIST.800.53.R5-"}

func addPacks(c constructs.IConstruct, rule, reason string) {
	for _, p := range packs {
		add(c, p+rule, reason)
	}
}

// suppressPacks records the HIPAA and NIST findings the stack accepts.
func suppressPacks(s *Stack, props StackProps) {
	for _, role := range s.Roles {
		addPacks(role, "IAMNoInlinePolicy", reasonInlinePolicy)
	}
	addPacks(s.StateMachine, "IAMNoInlinePolicy", reasonInlinePolicy)
	for name, fn := range s.Functions {
		if len(props.VpcSubnetIds) == 0 || !contains(sourceReaders, name) {
			addPacks(fn, "LambdaInsideVPC", reasonNoVPC)
		}
		addPacks(fn, "LambdaDLQ", reasonNoDLQ)
	}
	addPacks(s.Bucket, "S3BucketReplicationEnabled", reasonNoReplicate)
	addPacks(s.Bucket, "S3BucketVersioningEnabled", reasonNoVersions)
	addPacks(s.Table, "DynamoDBInBackupPlan", reasonBackupPlan)
	if s.AuthTable != nil {
		addPacks(s.AuthTable, "DynamoDBInBackupPlan", reasonBackupPlan)
	}
	if s.TokenSecret != nil {
		addPacks(s.TokenSecret, "SecretsManagerRotationEnabled", reasonTokenKey)
	}
	if s.AccessLogsBucket != nil {
		addPacks(s.AccessLogsBucket, "S3DefaultEncryptionKMS", reasonLogsSSE)
		addPacks(s.AccessLogsBucket, "S3BucketReplicationEnabled", reasonLogsReplica)
		addPacks(s.AccessLogsBucket, "S3BucketLoggingEnabled", reasonLogsOfLogs)
	}
	if s.RestApi != nil {
		addPacks(s.RestApi, "APIGWCacheEnabledAndEncrypted", reasonNoAPICache)
		addPacks(s.RestApi, "APIGWSSLEnabled", reasonBackendCert)
		add(s.RestApi, "NIST.800.53.R5-APIGWAssociatedWithWAF", reasonWAF)
	}
	if b, ok := s.Source.(awss3.Bucket); ok {
		for _, rule := range []string{"S3BucketLoggingEnabled", "S3BucketReplicationEnabled", "S3BucketVersioningEnabled", "S3DefaultEncryptionKMS"} {
			addPacks(b, rule, reasonSourceBucket)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
