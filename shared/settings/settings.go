// Package settings holds the names that the CDK app (infra/) and the
// Lambda functions share: environment variable names, the values of
// BULKFHIR_AUTH, and the EventBridge detail-type the stack routes to the
// fail function. It imports nothing from bulkfhir, so infra/ links no
// adapter and CDK/jsii never reach a Lambda binary.
package settings

// Environment variable names.
const (
	EnvTable         = "BULKFHIR_TABLE"
	EnvBucket        = "BULKFHIR_BUCKET"
	EnvBucketPrefix  = "BULKFHIR_BUCKET_PREFIX"
	EnvStateMachine  = "BULKFHIR_STATE_MACHINE_ARN"
	EnvRetention     = "BULKFHIR_RETENTION"
	EnvPublicBaseURL = "BULKFHIR_PUBLIC_BASE_URL"
	EnvSourceDir     = "BULKFHIR_SOURCE_DIR"
	EnvSourceBucket  = "BULKFHIR_SOURCE_BUCKET"
	EnvSourcePrefix  = "BULKFHIR_SOURCE_PREFIX"
	// The upstream FHIR server: its base URL, the Secrets Manager secret
	// with its credentials (fhirsource.Secret), and the non-secret parts
	// of SMART Backend Services or SigV4.
	EnvSourceURL         = "BULKFHIR_SOURCE_URL"
	EnvSourceSecretARN   = "BULKFHIR_SOURCE_SECRET_ARN"
	EnvSourceClientID    = "BULKFHIR_SOURCE_CLIENT_ID"
	EnvSourceTokenURL    = "BULKFHIR_SOURCE_TOKEN_URL"
	EnvSourceScope       = "BULKFHIR_SOURCE_SCOPE"
	EnvSourceSigV4Region = "BULKFHIR_SOURCE_SIGV4_REGION"
	EnvMaxFileBytes      = "BULKFHIR_MAX_FILE_BYTES"
	EnvMaxLiveJobs       = "BULKFHIR_MAX_LIVE_JOBS"
	// EnvManifestPageSize is how many file items one page of a paged
	// manifest (allowPartialManifests) holds at most.
	EnvManifestPageSize = "BULKFHIR_MANIFEST_PAGE_SIZE"
	EnvMaxJobDuration   = "BULKFHIR_MAX_JOB_DURATION"
	EnvDeadlineMargin   = "BULKFHIR_DEADLINE_MARGIN"
	EnvChunkBudget      = "BULKFHIR_CHUNK_BUDGET"
)

// Authorization settings of the API functions.
const (
	// EnvAuth is how callers are authenticated: "bulkfhir" (the default:
	// bulkfhir's own SMART Backend Services tokens), "gateway" (an outside
	// issuer checked by API Gateway's JWT authorizer) or "none" (every
	// caller is one anonymous client; the stack sets it only with
	// bulkfhir:allowAnonymous=true).
	EnvAuth = "BULKFHIR_AUTH"
	// EnvTokenSecretARN is the Secrets Manager secret whose value signs
	// and verifies bulkfhir's access tokens (HS384).
	EnvTokenSecretARN = "BULKFHIR_TOKEN_SECRET_ARN"
	// EnvAuthTable is the DynamoDB table of clients and used jti values.
	EnvAuthTable = "BULKFHIR_AUTH_TABLE"
	// EnvTokenURL is the outside issuer's token endpoint (Auth gateway),
	// advertised in the CapabilityStatement.
	EnvTokenURL = "BULKFHIR_TOKEN_URL"
)

// Values of EnvAuth.
const (
	AuthBulkfhir = "bulkfhir"
	AuthGateway  = "gateway"
	AuthNone     = "none"
)

// StatusChangeDetailType is the EventBridge detail-type of Step Functions
// execution status changes: the stack's rule matches it and the fail
// function (sfnrunner.FailHandler) recognises it.
const StatusChangeDetailType = "Step Functions Execution Status Change"
