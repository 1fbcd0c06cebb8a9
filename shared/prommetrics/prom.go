// Package prommetrics is the embedded server's metrics.Recorder: the same
// figures the Lambda functions write as EMF lines, as Prometheus metrics
// (the official client library) for GET /metrics.
package prommetrics

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bulkfhir/bulkfhir/shared/metrics"
)

// Recorder turns metrics events into Prometheus metrics on its own
// registry: counters for counts and totals, histograms for durations and
// per-job sizes, gauges for what a sweep saw.
type Recorder struct {
	reg      *prometheus.Registry
	counters map[string]prometheus.Counter
	hists    map[string]prometheus.Observer
	gauges   map[string]prometheus.Gauge
}

var _ metrics.Recorder = (*Recorder)(nil)

// New returns a Recorder with every figure registered (at zero).
func New() *Recorder {
	r := &Recorder{reg: prometheus.NewRegistry(), counters: map[string]prometheus.Counter{},
		hists: map[string]prometheus.Observer{}, gauges: map[string]prometheus.Gauge{}}
	exports := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bulkfhir_exports_total", Help: "Exports by lifecycle event: accepted (kick-off), started (left the queue), completed, failed, cancelled.",
	}, []string{"event"})
	r.reg.MustRegister(exports)
	for name, event := range map[string]string{metrics.ExportsAccepted: "accepted", metrics.ExportsStarted: "started",
		metrics.ExportsCompleted: "completed", metrics.ExportsFailed: "failed", metrics.ExportsCancelled: "cancelled"} {
		r.counters[name] = exports.WithLabelValues(event)
	}
	counter := func(metric, name, help string) {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		r.reg.MustRegister(c)
		r.counters[metric] = c
	}
	counter(metrics.ChunkResources, "bulkfhir_exported_resources_total", "Resources written by export chunks.")
	counter(metrics.ChunkBytes, "bulkfhir_exported_bytes_total", "NDJSON bytes written by export chunks.")
	counter(metrics.SourceRetries, "bulkfhir_source_retries_total", "Upstream requests retried.")
	counter(metrics.SourceThrottled, "bulkfhir_source_throttled_total", "Upstream requests retried after a 429.")
	hist := func(metric, name, help string, buckets []float64) {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets})
		r.reg.MustRegister(h)
		r.hists[metric] = h
	}
	secs := prometheus.ExponentialBuckets(0.01, 4, 10)
	hist(metrics.ChunkDuration, "bulkfhir_chunk_duration_seconds", "Duration of one export chunk.", secs)
	hist(metrics.ChunkResourcesPerSecond, "bulkfhir_chunk_resources_per_second", "Resources per second of one export chunk.", prometheus.ExponentialBuckets(10, 4, 8))
	hist(metrics.QueueWait, "bulkfhir_queue_wait_seconds", "Time from kick-off to the start of the export.", secs)
	hist(metrics.JobDuration, "bulkfhir_job_duration_seconds", "Time from kick-off to completion.", secs)
	hist(metrics.JobResources, "bulkfhir_job_resources", "Resources of a completed job.", prometheus.ExponentialBuckets(1, 10, 9))
	hist(metrics.JobBytes, "bulkfhir_job_bytes", "Bytes of a completed job.", prometheus.ExponentialBuckets(1024, 10, 8))
	hist(metrics.JobFiles, "bulkfhir_job_files", "Output files of a completed job.", prometheus.ExponentialBuckets(1, 4, 8))
	gauge := func(metric, name, help string) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
		r.reg.MustRegister(g)
		r.gauges[metric] = g
	}
	gauge(metrics.RunningJobs, "bulkfhir_running_jobs", "Exports holding a running place, at the last sweep.")
	gauge(metrics.QueuedJobs, "bulkfhir_queued_jobs", "Exports waiting in the queue, at the last sweep.")
	gauge(metrics.OldestRunningJobAge, "bulkfhir_oldest_running_job_age_seconds", "Age of the oldest running export, at the last sweep.")
	gauge(metrics.OldestQueuedWait, "bulkfhir_oldest_queued_wait_seconds", "Wait of the oldest queued export, at the last sweep.")
	return r
}

// Record implements metrics.Recorder.
func (r *Recorder) Record(_ context.Context, ev metrics.Event) {
	for _, v := range ev.Values {
		switch {
		case r.counters[v.Name] != nil:
			if v.Value > 0 {
				r.counters[v.Name].Add(v.Value)
			}
		case r.hists[v.Name] != nil:
			val := v.Value
			if v.Name == metrics.ChunkDuration {
				val /= 1000 // recorded in milliseconds, exposed in seconds
			}
			r.hists[v.Name].Observe(val)
		case r.gauges[v.Name] != nil:
			r.gauges[v.Name].Set(v.Value)
		}
	}
}

// Handler serves the metrics in the Prometheus text format.
func (r *Recorder) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}
