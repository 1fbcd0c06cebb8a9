package api_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// TestAuditLines: kick-off, status, cancel and download are one audit line
// each, with client, job, file, bytes and outcome, and neither the query
// string nor the body (patient ids) ever reaches the log.
func TestAuditLines(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	src := &exporttest.Source{Lines: map[string][]string{
		"Patient": {`{"resourceType":"Patient","id":"secret-patient-7"}`},
	}}
	files := exporttest.NewFileStore()
	svc := export.NewService(exporttest.NewJobStore(), api.RedirectLinks(files), nopRunner{}, src, export.Config{}, log)
	h := api.New(svc, api.Config{Log: log, Deliver: deliverer{files}})
	call := func(method, target, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Accept", "application/fhir+json")
		r.Header.Set("Prefer", "respond-async")
		if body != "" {
			r.Header.Set("Content-Type", "application/fhir+json")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	kick := call(http.MethodPost, "http://h/fhir/Patient/$export?_outputFormat=application%2Ffhir%2Bndjson", `{"resourceType":"Parameters","parameter":[`+
		`{"name":"patient","valueReference":{"reference":"Patient/secret-patient-7"}},{"name":"_since","valueInstant":"2001-02-03T04:05:06Z"}]}`)
	if kick.Code != http.StatusAccepted {
		t.Fatalf("kick-off = %d %s", kick.Code, kick.Body)
	}
	job := strings.TrimPrefix(kick.Header().Get("Content-Location"), "http://h/fhir/bulkstatus/")
	call(http.MethodGet, "http://h/fhir/$export?_type=Patient&_since=2001-02-03T04:05:06Z", "")
	call(http.MethodGet, "http://h/fhir/bulkstatus/"+job, "")
	files.Objects[job+"/Patient.0000.ndjson"] = []byte(`{"resourceType":"Patient","id":"secret-patient-7"}` + "\n")
	if w := call(http.MethodGet, "http://h/fhir/bulkfiles/"+job+"/Patient.0000.ndjson?x=secret-query", ""); w.Code != 200 {
		t.Fatalf("download = %d %s", w.Code, w.Body)
	}
	call(http.MethodGet, "http://h/fhir/bulkfiles/"+strings.Repeat("a", 32)+"/Patient.0000.ndjson", "")
	call(http.MethodDelete, "http://h/fhir/bulkstatus/"+job, "")
	call(http.MethodGet, "http://h/fhir/metadata", "")

	for _, secret := range []string{"secret-patient-7", "2001-02-03", "secret-query", "_outputFormat"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds %q:\n%s", secret, logs.String())
		}
	}
	type line struct {
		Msg, Event, Client, Job, File string
		Outcome, Bytes                int
	}
	var got []line
	sc := bufio.NewScanner(&logs)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if l.Msg == "audit" {
			l.Msg = ""
			got = append(got, l)
		}
	}
	anon := api.AnonymousClient
	want := []line{
		{Event: "kickoff", Client: anon, Job: job, Outcome: 202},
		{Event: "kickoff", Client: anon, Outcome: 202},
		{Event: "status", Client: anon, Job: job, Outcome: 202},
		{Event: "download", Client: anon, Job: job, File: job + "/Patient.0000.ndjson", Outcome: 200, Bytes: len(`{"resourceType":"Patient","id":"secret-patient-7"}` + "\n")},
		{Event: "download", Client: anon, Job: strings.Repeat("a", 32), File: strings.Repeat("a", 32) + "/Patient.0000.ndjson", Outcome: 404},
		{Event: "cancel", Client: anon, Job: job, Outcome: 202},
	}
	if len(got) != len(want) {
		t.Fatalf("audit lines:\n%+v\nwant\n%+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if w.Job == "" {
			g.Job = "" // the second kick-off's job id is not known here
		}
		if w.Event != "download" || w.Outcome != 200 {
			g.Bytes = 0 // OperationOutcome bodies
		}
		if g != w {
			t.Errorf("audit line %d = %+v, want %+v", i, got[i], w)
		}
	}
}

// deliverer streams from the fake file store (redirect mode).
type deliverer struct{ files *exporttest.FileStore }

func (d deliverer) DeliverFile(w http.ResponseWriter, r *http.Request, key string) {
	b, ok := d.files.Objects[key]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	w.Write(b)
}
