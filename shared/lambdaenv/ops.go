package lambdaenv

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/metrics"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/stepmetrics"
)

// RoleDispatch is the dispatch function: the target of the EventBridge
// rule on executions that ended and of the periodic sweep. It starts
// queued jobs (it needs the state machine) and reads no source.
const RoleDispatch Role = 100

// loadOps reads the queue and metrics settings into c.
func loadOps(getenv func(string) string, c *Config, problems *[]string) {
	c.MaxRunningJobs = settings.DefaultMaxRunningJobs
	if v := strings.TrimSpace(getenv(settings.EnvMaxRunningJobs)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			*problems = append(*problems, fmt.Sprintf("%s=%q is not a whole number (0 turns the queue off)", settings.EnvMaxRunningJobs, v))
		} else {
			c.MaxRunningJobs = n
		}
	}
	c.MetricsNamespace = settings.DefaultMetricsNamespace
	if v := strings.TrimSpace(getenv(settings.EnvMetricsNamespace)); v != "" {
		c.MetricsNamespace = v
	}
	c.MetricsStack = strings.TrimSpace(getenv(settings.EnvMetricsStack))
	if c.MetricsStack == "" {
		c.MetricsStack = "bulkfhir"
	}
}

// metricsOut is where the EMF lines go: the function's stdout, which
// Lambda sends to its log group.
var metricsOut io.Writer = os.Stdout

// Metrics is the functions' Recorder: CloudWatch Embedded Metric Format
// lines, turned into metrics by CloudWatch Logs without any API call.
func Metrics(c Config) metrics.Recorder {
	return metrics.NewEMF(metricsOut, c.MetricsNamespace, c.MetricsStack)
}

// Observe installs what every function's export Service needs beyond its
// ports: the global queue of running jobs on the job store and the
// metrics of kick-offs and cancels.
func Observe(svc *export.Service, q export.Queue, c Config, rec metrics.Recorder) {
	svc.SetQueue(q, c.MaxRunningJobs)
	svc.SetObserver(stepmetrics.Observer{Rec: rec})
}

// Steps are the export steps of a task function with their metrics
// recorded around them (EMF lines).
func Steps(c Config, jobs *dynamostore.Store, files export.FileStore, src export.Source, log *slog.Logger) *stepmetrics.Steps {
	return stepmetrics.New(export.NewSteps(jobs, files, src, c.Export(), log), jobs, src, Metrics(c))
}
