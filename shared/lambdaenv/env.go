// Package lambdaenv wires bulkfhir's Lambda functions: typed configuration
// from environment variables (every problem reported at once), the AWS
// clients (created once per container, endpoints from AWS_ENDPOINT_URL_*)
// and the adapters. functions/<name>/main.go calls it and starts the
// Lambda handler; no export logic lives here, and the API Gateway glue is
// in shared/apigw.
package lambdaenv

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// Role says which function is being configured: the API needs the state
// machine, the tasks do not.
type Role int

// Roles.
const (
	RoleAPI Role = iota
	RoleTask
	// RoleStatus is the status function: the API on the status route only
	// (GET, DELETE), which never reads the source, so it is given none and
	// its IAM role grants no source read.
	RoleStatus
)

// Config is the validated configuration of a function.
type Config struct {
	Table, Bucket, BucketPrefix string
	StateMachineARN             string
	PublicBaseURL               string
	SourceDir                   string
	SourceBucket, SourcePrefix  string
	// Upstream FHIR server (SourceURL set).
	SourceURL, SourceSecretARN                            string
	SourceClientID, SourceTokenURL, SourceScope, SigV4Reg string
	Retention, MaxJobDuration                             time.Duration
	DeadlineMargin, ChunkBudget                           time.Duration
	MaxFileBytes                                          int64
	MaxLiveJobs                                           int
	ManifestPageSize                                      int
	// StatusOnly is set for RoleStatus: no source, the status route only.
	StatusOnly bool
	// Auth, TokenSecretARN, TokenURL: how the API authenticates (auth.go).
	Auth, TokenSecretARN, TokenURL string
	// Downloads: the download mode and link signer (downloads.go).
	Downloads Downloads
	// MaxRunningJobs and MetricsNamespace: ops.go.
	MaxRunningJobs                 int
	MetricsNamespace, MetricsStack string
}

// Export is the core configuration this Config implies.
func (c Config) Export() export.Config {
	return export.Config{
		Retention: c.Retention, MaxFileBytes: c.MaxFileBytes, MaxJobDuration: c.MaxJobDuration,
		DeadlineMargin: c.DeadlineMargin, ChunkBudget: c.ChunkBudget, MaxLiveJobsPerOwner: c.MaxLiveJobs,
		ManifestPageSize: c.ManifestPageSize,
		// Presigned S3 links need no bearer token; redirect-mode links do.
		RequiresAccessToken: c.Downloads.Redirect(),
	}
}

// MaxManifestPageSize is the largest BULKFHIR_MANIFEST_PAGE_SIZE: pages
// are not relinked like an unpaged manifest (api.Config.Fits), so a page
// of presigned links as long as AWS's (about 1.6 KB an item, as the Lambda
// response encodes it) has to fit in 6 MB as it is: 3,000 items are 4.8 MB
// (TestManifestsOverTheLambdaLimit).
const MaxManifestPageSize = 3000

// Load reads and validates the configuration, reporting every missing or
// malformed variable in one error.
func Load(getenv func(string) string, role Role) (Config, error) {
	var problems []string
	need := func(name string) string {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			problems = append(problems, name+" is not set")
		}
		return v
	}
	dur := func(name string, def time.Duration) time.Duration {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			problems = append(problems, fmt.Sprintf("%s=%q is not a positive duration (e.g. 2h)", name, v))
			return def
		}
		return d
	}
	num := func(name string, def int64) int64 {
		v := strings.TrimSpace(getenv(name))
		if v == "" {
			return def
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			problems = append(problems, fmt.Sprintf("%s=%q is not a positive integer", name, v))
			return def
		}
		return n
	}
	c := Config{
		Table:           need(settings.EnvTable),
		Bucket:          need(settings.EnvBucket),
		BucketPrefix:    getenv(settings.EnvBucketPrefix),
		PublicBaseURL:   strings.TrimSuffix(getenv(settings.EnvPublicBaseURL), "/"),
		SourceDir:       getenv(settings.EnvSourceDir),
		SourceBucket:    getenv(settings.EnvSourceBucket),
		SourcePrefix:    getenv(settings.EnvSourcePrefix),
		SourceURL:       strings.TrimSpace(getenv(settings.EnvSourceURL)),
		SourceSecretARN: strings.TrimSpace(getenv(settings.EnvSourceSecretARN)),
		SourceClientID:  getenv(settings.EnvSourceClientID),
		SourceTokenURL:  getenv(settings.EnvSourceTokenURL),
		SourceScope:     getenv(settings.EnvSourceScope),
		SigV4Reg:        getenv(settings.EnvSourceSigV4Region),
		Retention:       dur(settings.EnvRetention, export.DefaultRetention),
		MaxJobDuration:  dur(settings.EnvMaxJobDuration, export.DefaultMaxJobDuration),
		DeadlineMargin:  dur(settings.EnvDeadlineMargin, 20*time.Second),
		ChunkBudget:     dur(settings.EnvChunkBudget, 0),
		MaxFileBytes:    num(settings.EnvMaxFileBytes, export.DefaultMaxFileBytes),
		MaxLiveJobs:     int(num(settings.EnvMaxLiveJobs, export.DefaultMaxLiveJobsPerOwner)),
	}
	c.ManifestPageSize = int(num(settings.EnvManifestPageSize, export.DefaultManifestPageSize))
	if c.ManifestPageSize > MaxManifestPageSize {
		problems = append(problems, fmt.Sprintf("%s=%d is over %d: a page of presigned links (about 1.6 KB an item) must fit in one 6 MB Lambda response",
			settings.EnvManifestPageSize, c.ManifestPageSize, MaxManifestPageSize))
	}
	loadOps(getenv, &c, &problems)
	if role == RoleAPI || role == RoleStatus {
		c.StateMachineARN = need(settings.EnvStateMachine)
		loadAuth(getenv, &c, &problems)
		c.Downloads = loadDownloads(getenv, &problems)
	}
	if role == RoleDispatch {
		c.StateMachineARN = need(settings.EnvStateMachine)
	}
	// The dispatch function reads no source either.
	c.StatusOnly = role == RoleStatus || role == RoleDispatch
	sources := 0
	for _, v := range []string{c.SourceDir, c.SourceBucket, c.SourceURL} {
		if v != "" {
			sources++
		}
	}
	switch {
	case c.StatusOnly:
		// The status function reads no source: source settings (the stack
		// sets none) are ignored, and no source client is built.
		c.SourceDir, c.SourceBucket, c.SourcePrefix, c.SourceURL, c.SourceSecretARN = "", "", "", "", ""
	case sources > 1:
		problems = append(problems, fmt.Sprintf("set one source: %s, %s or %s", settings.EnvSourceURL, settings.EnvSourceBucket, settings.EnvSourceDir))
	case sources == 0:
		problems = append(problems, fmt.Sprintf("no source: set %s (a FHIR server), %s (NDJSON objects in S3) or %s", settings.EnvSourceURL, settings.EnvSourceBucket, settings.EnvSourceDir))
	}
	if c.SourceURL != "" {
		if u, err := url.Parse(c.SourceURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			problems = append(problems, fmt.Sprintf("%s=%q is not an http(s) URL", settings.EnvSourceURL, c.SourceURL))
		}
	}
	if c.BucketPrefix == "" {
		c.BucketPrefix = "exports/"
	}
	if len(problems) > 0 {
		return Config{}, errors.New("configuration: " + strings.Join(problems, "; "))
	}
	return c, nil
}
