package api_test

import (
	"context"
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

type nopRunner struct{}

func (nopRunner) Start(context.Context, string) error { return nil }
func (nopRunner) Stop(context.Context, string) error  { return nil }

func newHandler() http.Handler {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := &exporttest.Source{
		Lines:  map[string][]string{"Patient": {`{"resourceType":"Patient","id":"a"}`}},
		Groups: map[string][]string{"g": {"a"}},
	}
	svc := export.NewService(exporttest.NewJobStore(), exporttest.NewFileStore(), nopRunner{}, src, export.Config{}, quiet)
	return api.New(svc, api.Config{Log: quiet})
}

// FuzzHandler: whatever arrives, the API answers without panicking, never
// with a 5xx, and every error is a FHIR OperationOutcome.
func FuzzHandler(f *testing.F) {
	for _, s := range [][5]string{
		{"GET", "/fhir/$export", "_type=Patient", "respond-async", ""},
		{"POST", "/fhir/Patient/$export", "", "respond-async, handling=lenient", `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/a"}}]}`},
		{"GET", "/fhir/Group/g/$export", "_since=2020-01-01T00:00:00Z", "respond-async", ""},
		{"DELETE", "/fhir/bulkstatus/x", "", "", ""},
		{"GET", "/fhir/bulkstatus/x", "page=Patient.0000%2FPatient.0000.ndjson", "", ""},
		{"GET", "/fhir/$export", "allowPartialManifests=true&organizeOutputBy=Patient", "respond-async", ""},
		{"GET", "/fhir/metadata", "", "", ""},
		{"PATCH", "/fhir/Group/../$export", "%zz", "", "{"},
		{"GET", "/fhir/bulkfiles/../../etc/passwd", "exp=1&sig=zz", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	h := newHandler()
	f.Fuzz(func(t *testing.T, method, path, query, prefer, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path+query+method, " \r\n\t#") || method == "" || strings.ContainsAny(method, "()<>@,;:\\\"/[]?={}") {
			return
		}
		req, err := http.NewRequest(method, "http://h"+path+"?"+query, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Accept", "application/fhir+json")
		req.Header.Set("Prefer", prefer)
		req.Header.Set("Content-Type", "application/fhir+json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s?%s → %d: %s", method, path, query, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			if ct := rec.Header().Get("Content-Type"); ct != "application/fhir+json" {
				t.Fatalf("%s %s → %d with Content-Type %q", method, path, rec.Code, ct)
			}
			if !strings.Contains(rec.Body.String(), `"resourceType":"OperationOutcome"`) {
				t.Fatalf("%s %s → %d without an OperationOutcome: %s", method, path, rec.Code, rec.Body)
			}
		}
	})
}
