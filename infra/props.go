package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
)

// StackProps is everything a team tunes. Zero values take the defaults;
// cdk.json context ("bulkfhir:<name>") sets them for cdk synth/deploy.
type StackProps struct {
	awscdk.StackProps
	// Retention drives the manifest's Expires, link expiry, DynamoDB TTL
	// and the expire function's sweep (files and records go at Expires);
	// the S3 lifecycle backstop is MaxJobDuration + Retention in whole
	// days, rounded up (BackstopDays). Default 2h.
	Retention time.Duration
	// MaxConcurrency of the state machine's Distributed Map over work
	// units (child executions at once). Default 10.
	MaxConcurrency int
	// MaxJobDuration bounds an export: the state machine's TimeoutSeconds
	// (a timed-out job is marked failed) and how long a live job's record
	// is kept. Default 24h.
	MaxJobDuration time.Duration
	// SourceBucket holds the NDJSON to export (under SourcePrefix). Empty:
	// the stack creates a source bucket.
	SourceBucket string
	SourcePrefix string
	// SourceURL exports from an upstream FHIR R4 server instead of S3
	// (then no source bucket is made). Its credentials are in the Secrets
	// Manager secret SourceSecretArn (JSON: {"token"} or {"clientId",
	// "privateKey", "tokenUrl", "scope", "keyId"}); SourceClientID,
	// SourceTokenURL and SourceScope may be given here instead of in the
	// secret. SourceSigV4Region signs requests with the functions' role
	// (AWS HealthLake in that region).
	SourceURL, SourceSecretArn                  string
	SourceClientID, SourceTokenURL, SourceScope string
	SourceSigV4Region                           string
	// VpcSubnetIds and VpcSecurityGroupIds put the functions that read the
	// source (kickoff, status, plan, export) in a VPC, to reach a private
	// upstream. The subnets need a route to S3, DynamoDB, Step Functions and STS
	// (a NAT gateway or VPC endpoints).
	VpcSubnetIds, VpcSecurityGroupIds []string
	// BuildDir holds <function>/bootstrap from `make lambdas`. Default
	// "../build" (relative to infra/).
	BuildDir string
	// ThrottleRateLimit (requests/s) and ThrottleBurstLimit for the API.
	ThrottleRateLimit  float64
	ThrottleBurstLimit int
	// RetainData keeps the table and the export bucket when the stack is
	// deleted. Default false: exports are ephemeral.
	RetainData bool
	// KMS encrypts the bucket and table with a customer-managed key
	// (rotation on) instead of the AWS-managed default.
	KMS bool
	// AccessLogsBucket, when set, receives S3 server access logs.
	AccessLogsBucket string
	// LogRetention of every log group. Default one month.
	LogRetention awslogs.RetentionDays
	// JwtIssuer and JwtAudience use an outside authorization server: API
	// Gateway's JWT authorizer checks its tokens (the caller is the
	// token's client_id or sub; its scope claim is enforced as for
	// bulkfhir's own tokens). Without them, bulkfhir issues the tokens
	// (auth.go): the secure default.
	JwtIssuer   string
	JwtAudience string
	// JwtTokenURL is the outside issuer's token endpoint, advertised in
	// the CapabilityStatement.
	JwtTokenURL string
	// AllowAnonymous serves an API without authentication, every caller
	// one anonymous client: a development setting, never the default.
	AllowAnonymous bool
	// Auth is "bulkfhir", "jwt" or "none"; empty means jwt with a
	// JwtIssuer, none with AllowAnonymous, else bulkfhir. "none" without
	// AllowAnonymous is refused.
	Auth string
	// PublicBaseURL is the FHIR base clients use with a custom domain.
	PublicBaseURL string
	// Memory (MB) of the export function, the one that streams data
	// (bulkfhir:exportMemoryMB).
	ExportMemoryMB int
	// ExportTmpMB is the export function's ephemeral storage (/tmp) in MB
	// (bulkfhir:exportTmpMB, 512 to 10240): an organizeOutputBy=Patient
	// unit chains one patient batch's resources in a temporary file there.
	ExportTmpMB int
	// ApiType is "http" (API Gateway HTTP API, the default) or "rest" (a
	// REST API with the same routes, throttling, access log and
	// authorization: what LocalStack's free edition emulates).
	ApiType string
	// Architecture of the functions: "arm64" (default) or "x86_64"; `make
	// lambdas ARCH=…` builds the matching binaries.
	Architecture string
	// AwsEndpointURL declares AWS_ENDPOINT_URL on every function: only for
	// SAM, which sets just the variables a template declares (make sam-*
	// sets it; the --env-vars file from make sam-env gives the value).
	AwsEndpointURL string
	// Downloads is "presigned" (default: presigned S3 links, signed by the
	// download-signer role) or "redirect" (links to the API, which checks
	// the owner's token and redirects; downloads.go).
	Downloads string
	// OpsProps: the queue, reserved concurrency, alarms, the production
	// profile (ops.go, profile.go).
	OpsProps
	// createAccessLogs: the production profile without an access logs
	// bucket makes one (profile.go).
	createAccessLogs bool
}

func (p StackProps) withDefaults() StackProps {
	if p.Retention <= 0 {
		p.Retention = 2 * time.Hour
	}
	if p.MaxConcurrency <= 0 {
		p.MaxConcurrency = 10
	}
	if p.MaxJobDuration <= 0 {
		p.MaxJobDuration = 24 * time.Hour
	}
	if p.BuildDir == "" {
		p.BuildDir = "../build"
	}
	if p.ThrottleRateLimit <= 0 {
		p.ThrottleRateLimit = 20
	}
	if p.ThrottleBurstLimit <= 0 {
		p.ThrottleBurstLimit = 40
	}
	if p.LogRetention == "" {
		p.LogRetention = awslogs.RetentionDays_ONE_MONTH
	}
	if p.ExportMemoryMB <= 0 {
		p.ExportMemoryMB = 1024
	}
	if p.ExportTmpMB <= 0 {
		p.ExportTmpMB = defaultExportTmpMB
	}
	if p.ApiType == "" {
		p.ApiType = apiHTTP
	}
	if p.Architecture == "" {
		p.Architecture = archARM64
	}
	p.OpsProps = p.OpsProps.withDefaults(p.MaxConcurrency)
	return p.applyProfile()
}

// Function architectures (bulkfhir:architecture).
const (
	archARM64 = "arm64"
	archX8664 = "x86_64"
)

// check refuses combinations the stack cannot build.
func (p StackProps) check() error {
	switch p.ApiType {
	case "", apiHTTP, apiREST:
	default:
		return fmt.Errorf("bulkfhir:apiType must be http or rest, not %q", p.ApiType)
	}
	switch p.Architecture {
	case "", archARM64, archX8664:
	default:
		return fmt.Errorf("bulkfhir:architecture must be arm64 or x86_64, not %q", p.Architecture)
	}
	if p.ExportTmpMB != 0 && (p.ExportTmpMB < 512 || p.ExportTmpMB > 10240) {
		return fmt.Errorf("bulkfhir:exportTmpMB must be between 512 and 10240 (Lambda's ephemeral storage), not %d", p.ExportTmpMB)
	}
	if p.ExportMemoryMB != 0 && (p.ExportMemoryMB < 128 || p.ExportMemoryMB > 10240) {
		return fmt.Errorf("bulkfhir:exportMemoryMB must be between 128 and 10240, not %d", p.ExportMemoryMB)
	}
	if err := p.checkDownloads(); err != nil {
		return err
	}
	mode, err := p.authMode()
	if err != nil {
		return err
	}
	if err := p.checkProfile(); err != nil {
		return err
	}
	if mode == authJWT && p.ApiType == apiREST {
		// A REST API has no JWT authorizer (only Cognito user pools).
		return fmt.Errorf("bulkfhir:auth=jwt (an outside issuer) needs bulkfhir:apiType=http: REST APIs have no JWT authorizer")
	}
	return nil
}

func (p StackProps) lambdaArchitecture() awslambda.Architecture {
	if p.Architecture == archX8664 {
		return awslambda.Architecture_X86_64()
	}
	return awslambda.Architecture_ARM_64()
}

// RetentionDays is the S3 lifecycle expiration for a retention: whole days,
// rounded up, at least one.
func RetentionDays(retention time.Duration) float64 {
	return math.Max(1, math.Ceil(retention.Hours()/24))
}

// propsFromContext reads the props from cdk.json / -c context values.
func propsFromContext(get func(string) any) (StackProps, error) {
	var p StackProps
	str := func(k string) string {
		if v, ok := get("bulkfhir:" + k).(string); ok {
			return v
		}
		return ""
	}
	var err error
	if v := str("retention"); v != "" {
		if p.Retention, err = time.ParseDuration(v); err != nil {
			return p, fmt.Errorf("context bulkfhir:retention: %w", err)
		}
	}
	if v := str("maxConcurrency"); v != "" {
		if p.MaxConcurrency, err = strconv.Atoi(v); err != nil {
			return p, fmt.Errorf("context bulkfhir:maxConcurrency: %w", err)
		}
	}
	if v := str("maxJobDuration"); v != "" {
		if p.MaxJobDuration, err = time.ParseDuration(v); err != nil {
			return p, fmt.Errorf("context bulkfhir:maxJobDuration: %w", err)
		}
	}
	for _, f := range []struct {
		k   string
		dst *int
	}{{"exportMemoryMB", &p.ExportMemoryMB}, {"exportTmpMB", &p.ExportTmpMB}} {
		if v := str(f.k); v != "" {
			if *f.dst, err = strconv.Atoi(v); err != nil {
				return p, fmt.Errorf("context bulkfhir:%s: %w", f.k, err)
			}
		}
	}
	if v := str("throttleRateLimit"); v != "" {
		if p.ThrottleRateLimit, err = strconv.ParseFloat(v, 64); err != nil {
			return p, fmt.Errorf("context bulkfhir:throttleRateLimit: %w", err)
		}
	}
	if v := str("throttleBurstLimit"); v != "" {
		if p.ThrottleBurstLimit, err = strconv.Atoi(v); err != nil {
			return p, fmt.Errorf("context bulkfhir:throttleBurstLimit: %w", err)
		}
	}
	p.SourceBucket, p.SourcePrefix = str("sourceBucket"), str("sourcePrefix")
	p.SourceURL, p.SourceSecretArn = str("sourceUrl"), str("sourceSecretArn")
	p.SourceClientID, p.SourceTokenURL, p.SourceScope = str("sourceClientId"), str("sourceTokenUrl"), str("sourceScope")
	p.SourceSigV4Region = str("sourceSigV4Region")
	split := func(v string) []string {
		var out []string
		for _, x := range strings.Split(v, ",") {
			if x = strings.TrimSpace(x); x != "" {
				out = append(out, x)
			}
		}
		return out
	}
	p.VpcSubnetIds, p.VpcSecurityGroupIds = split(str("vpcSubnetIds")), split(str("vpcSecurityGroupIds"))
	if (len(p.VpcSubnetIds) == 0) != (len(p.VpcSecurityGroupIds) == 0) {
		return p, fmt.Errorf("context: bulkfhir:vpcSubnetIds and bulkfhir:vpcSecurityGroupIds go together")
	}
	if p.SourceURL != "" && p.SourceBucket != "" {
		return p, fmt.Errorf("context: set bulkfhir:sourceUrl or bulkfhir:sourceBucket, not both")
	}
	p.BuildDir = str("buildDir")
	p.RetainData = str("retainData") == "true"
	p.KMS = str("kms") == "true"
	p.AccessLogsBucket = str("accessLogsBucket")
	p.JwtIssuer, p.JwtAudience, p.JwtTokenURL = str("jwtIssuer"), str("jwtAudience"), str("jwtTokenUrl")
	p.AllowAnonymous = str("allowAnonymous") == "true"
	p.Auth = str("auth")
	p.PublicBaseURL = str("publicBaseUrl")
	p.ApiType, p.Architecture = str("apiType"), str("architecture")
	p.AwsEndpointURL = str("awsEndpointUrl")
	p.Downloads = str("downloads")
	if p.OpsProps, err = opsFromContext(str); err != nil {
		return p, err
	}
	if err := p.check(); err != nil {
		return p, fmt.Errorf("context: %w", err)
	}
	return p, nil
}
