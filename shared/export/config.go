package export

import "time"

// Config tunes the steps and the service. Zero fields take the defaults.
type Config struct {
	// Retention is how long files and job records stay after completion.
	// It drives the manifest's Expires, link expiry and record expiry.
	Retention time.Duration
	// MaxFileBytes rolls an output file before it would exceed this size
	// (a single larger resource still gets a file of its own). A smaller
	// _maximumFileSize lowers it for one job.
	MaxFileBytes int64
	// MinFileBytes is the smallest _maximumFileSize a kick-off may ask for
	// (capped at MaxFileBytes), so a client cannot make a file per resource.
	MinFileBytes int64
	// ChunkBudget bounds one ExportChunk call; 0 means only the context
	// deadline bounds it.
	ChunkBudget time.Duration
	// DeadlineMargin is kept free before the context deadline so a chunk can
	// commit its file and report its cursor (the Lambda timeout).
	DeadlineMargin time.Duration
	// MaxJobDuration bounds how long a live job's record is kept.
	MaxJobDuration time.Duration
	// MaxLiveJobsPerOwner caps accepted and in-progress jobs per client;
	// kick-offs beyond it get 429 with Retry-After.
	MaxLiveJobsPerOwner int
	// PatientBatch is how many patients one unit of a patient or group
	// export covers, unless the source sets its own (PatientBatcher).
	PatientBatch int
	// ManifestPageSize is how many file items one page of a paged manifest
	// holds at most (allowPartialManifests, N-04).
	ManifestPageSize int
	// RequiresAccessToken is the manifest's requiresAccessToken: true only
	// when the FileStore's links need the bearer token.
	RequiresAccessToken bool
}

// Defaults for Config.
const (
	DefaultRetention           = 2 * time.Hour
	DefaultMaxFileBytes        = 64 << 20
	DefaultMinFileBytes        = 1 << 20
	DefaultDeadlineMargin      = 5 * time.Second
	DefaultMaxJobDuration      = 24 * time.Hour
	DefaultMaxLiveJobsPerOwner = 20
	DefaultPatientBatch        = 5000
	DefaultManifestPageSize    = 1000
)

func (c Config) withDefaults() Config {
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxFileBytes <= 0 {
		c.MaxFileBytes = DefaultMaxFileBytes
	}
	if c.MinFileBytes <= 0 {
		c.MinFileBytes = DefaultMinFileBytes
	}
	if c.MinFileBytes > c.MaxFileBytes {
		c.MinFileBytes = c.MaxFileBytes
	}
	if c.DeadlineMargin <= 0 {
		c.DeadlineMargin = DefaultDeadlineMargin
	}
	if c.MaxJobDuration <= 0 {
		c.MaxJobDuration = DefaultMaxJobDuration
	}
	if c.MaxLiveJobsPerOwner <= 0 {
		c.MaxLiveJobsPerOwner = DefaultMaxLiveJobsPerOwner
	}
	if c.ManifestPageSize <= 0 {
		c.ManifestPageSize = DefaultManifestPageSize
	}
	if c.PatientBatch <= 0 {
		c.PatientBatch = DefaultPatientBatch
	}
	return c
}
