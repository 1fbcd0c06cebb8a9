package lambdaenv

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/metrics"
)

// metricsOut is where the EMF lines go: the function's stdout, which
// Lambda sends to its log group (tests replace it).
var metricsOut io.Writer = os.Stdout

// newMetrics is the functions' Recorder: CloudWatch Embedded Metric Format
// lines, turned into metrics by CloudWatch Logs without any API call.
func newMetrics(c Config) metrics.Recorder {
	return metrics.NewEMF(metricsOut, c.MetricsNamespace, c.MetricsStack)
}

// Settings of the global admission queue (issue 16), kept apart from the
// long lists in env.go.
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
)

// RoleDispatch is the dispatch function: the target of the EventBridge
// rule on executions that ended and of the periodic sweep. It starts
// queued jobs (it needs the state machine) and reads no source.
const RoleDispatch Role = 100

// loadOps reads the queue and metrics settings into c.
func loadOps(getenv func(string) string, c *Config, problems *[]string) {
	c.MaxRunningJobs = DefaultMaxRunningJobs
	if v := strings.TrimSpace(getenv(EnvMaxRunningJobs)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			*problems = append(*problems, fmt.Sprintf("%s=%q is not a whole number (0 turns the queue off)", EnvMaxRunningJobs, v))
		} else {
			c.MaxRunningJobs = n
		}
	}
	c.MetricsNamespace = DefaultMetricsNamespace
	if v := strings.TrimSpace(getenv(EnvMetricsNamespace)); v != "" {
		c.MetricsNamespace = v
	}
	c.MetricsStack = strings.TrimSpace(getenv(EnvMetricsStack))
	if c.MetricsStack == "" {
		c.MetricsStack = "bulkfhir"
	}
}
