package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsAfterAnExport: after one export, GET /metrics (Prometheus text
// format) counts one accepted, started and completed export, and its
// resources and bytes match the manifest's.
func TestMetricsAfterAnExport(t *testing.T) {
	s := startServer(t, dataDir)
	m := waitManifest(t, kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient,Observation", kickHeaders(), ""), nil)
	var resources, size int64
	for _, f := range m.Output {
		resources += *f.Count
		size += *f.FileSize
	}
	if resources == 0 {
		t.Fatal("the export wrote nothing")
	}
	r := do(t, http.MethodGet, strings.TrimSuffix(s.base, "/fhir")+"/metrics", nil, "")
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics = %d %s", r.status, r.header.Get("Content-Type"))
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("not the Prometheus text format: %v\n%s", err, r.body)
	}
	value := func(name string, label ...string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no %s in /metrics", name)
		}
		for _, mt := range f.Metric {
			if len(label) == 2 && !hasLabel(mt, label[0], label[1]) {
				continue
			}
			switch {
			case mt.Counter != nil:
				return mt.Counter.GetValue()
			case mt.Gauge != nil:
				return mt.Gauge.GetValue()
			case mt.Histogram != nil:
				return mt.Histogram.GetSampleSum()
			}
		}
		t.Fatalf("%s%v not found", name, label)
		return 0
	}
	count := func(name string) uint64 {
		t.Helper()
		return families[name].Metric[0].Histogram.GetSampleCount()
	}
	for event, want := range map[string]float64{"accepted": 1, "started": 1, "completed": 1, "failed": 0, "cancelled": 0} {
		if got := value("bulkfhir_exports_total", "event", event); got != want {
			t.Errorf("bulkfhir_exports_total{event=%q} = %v, want %v", event, got, want)
		}
	}
	if got := value("bulkfhir_exported_resources_total"); got != float64(resources) {
		t.Errorf("exported resources = %v, the manifest lists %d", got, resources)
	}
	if got := value("bulkfhir_exported_bytes_total"); got != float64(size) {
		t.Errorf("exported bytes = %v, the manifest lists %d", got, size)
	}
	if got := value("bulkfhir_job_resources"); got != float64(resources) || count("bulkfhir_job_resources") != 1 {
		t.Errorf("job resources sum = %v over %d jobs, want %d over 1", got, count("bulkfhir_job_resources"), resources)
	}
	if count("bulkfhir_job_duration_seconds") != 1 || count("bulkfhir_queue_wait_seconds") != 1 || count("bulkfhir_chunk_duration_seconds") == 0 {
		t.Errorf("duration histograms: job %d, queue %d, chunk %d", count("bulkfhir_job_duration_seconds"),
			count("bulkfhir_queue_wait_seconds"), count("bulkfhir_chunk_duration_seconds"))
	}
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.Label {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
