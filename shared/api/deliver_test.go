package api_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// TestDownloadRouteServesExportedFilesOnly: the download route delivers a
// job's .ndjson files to its owner, and answers 404 for the other objects
// a job keeps under its prefix (plan, patient batches, cursors, spill
// parts), even when they exist.
func TestDownloadRouteServesExportedFilesOnly(t *testing.T) {
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	jobs, files := exporttest.NewJobStore(), exporttest.NewFileStore()
	svc := export.NewService(jobs, api.RedirectLinks(files), nopRunner{}, &exporttest.Source{}, export.Config{}, quiet)
	h := api.New(svc, api.Config{Log: quiet, Deliver: deliverer{files}})
	job := exporttest.CompletedWithFiles(t, jobs, api.AnonymousClient, "http://h/fhir/$export", 1, 1, false)
	for _, tc := range []struct {
		key  string
		want int
	}{
		{export.FileKey(job, export.UnitID("Observation", 0), "Observation", 0), http.StatusOK},
		{export.PlanKey(job), http.StatusNotFound},
		{job + "/batches/000000.json", http.StatusNotFound},
		{job + "/batches/index.json", http.StatusNotFound},
		{job + "/Observation.0000/cursor.0123456789abcdef.txt", http.StatusNotFound},
		{job + "/Observation.0000/spill.000000.bin", http.StatusNotFound},
	} {
		files.Objects[tc.key] = []byte("{}\n")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://h/fhir/bulkfiles/"+tc.key, nil))
		if w.Code != tc.want || (tc.want != http.StatusOK && !strings.Contains(w.Body.String(), `"OperationOutcome"`)) {
			t.Errorf("GET %s = %d %s, want %d", tc.key, w.Code, w.Body, tc.want)
		}
	}
}
