package settings

// Settings of the global admission queue and the metrics (issue 16).
const (
	// EnvMaxRunningJobs is the stack's bulkfhir:maxRunningJobs: at most
	// this many exports run at once; later kick-offs wait as accepted.
	EnvMaxRunningJobs = "BULKFHIR_MAX_RUNNING_JOBS"
	// EnvMetricsNamespace is the CloudWatch namespace of the functions'
	// Embedded Metric Format lines.
	EnvMetricsNamespace = "BULKFHIR_METRICS_NAMESPACE"
	// EnvMetricsStack is the value of the metrics' one dimension, Stack
	// (the stack name), so two stacks in one account keep their figures
	// apart.
	EnvMetricsStack = "BULKFHIR_METRICS_STACK"
)

// Defaults of the issue 16 settings.
const (
	DefaultMaxRunningJobs   = 5
	DefaultMetricsNamespace = "bulkfhir"
	// DefaultMaxLiveJobs is export.DefaultMaxLiveJobsPerOwner, for the
	// stack (which imports no core package).
	DefaultMaxLiveJobs = 20
)
