package functions_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// apiRequest sends one API Gateway (HTTP API, payload 2.0) request through
// the kickoff/status handler.
func apiRequest(t *testing.T, method, path, query, body, requestID string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	return apiRequestWith(t, method, path, query, body, requestID, nil)
}

// apiRequestWith is apiRequest with more request headers.
func apiRequestWith(t *testing.T, method, path, query, body, requestID string, extra map[string]string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	cl := need(t)
	h := map[string]string{"accept": "application/fhir+json", "prefer": "respond-async", "host": "bulkfhirapi.execute-api.us-east-1.amazonaws.com"}
	for k, v := range extra {
		h[k] = v
	}
	if body != "" {
		h["content-type"] = "application/fhir+json"
	}
	if requestID == "" {
		requestID = exportID()
	}
	ev := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "ANY /fhir/{proxy+}", RawPath: path, RawQueryString: query, Headers: h, Body: body,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID: requestID, Stage: "$default", DomainName: "bulkfhirapi.execute-api.us-east-1.amazonaws.com",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: path, Protocol: "HTTP/1.1"},
		},
	}
	cl.mu.Lock()
	api := cl.api
	cl.mu.Unlock()
	resp, err := gatewayCall(context.Background(), api.APIHandler(), ev)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if n := eventSize(resp); n > maxLambdaResponse {
		// API Gateway gets an error from Lambda instead of this response.
		cl.crossed(fmt.Sprintf("%s %s: response of %d bytes is over the %d-byte Lambda limit", method, path, n, maxLambdaResponse))
	}
	return resp
}

// eventSize is the size of a function's response as the Lambda service
// measures it: the event as the runtime encodes it (aws-lambda-go:
// encoding/json without HTML escaping).
func eventSize(v any) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
	return buf.Len() - 1 // the encoder's newline
}

var idCounter int

// waitLimit bounds how long a test waits for one export.
var waitLimit = 3 * time.Minute

func exportID() string {
	idCounter++
	return "req-" + time.Now().Format("150405.000000") + "-" + string(rune('a'+idCounter%26))
}

// responseBody is the body a client reads: API Gateway decodes a base64
// body, and a gzip Content-Encoding is undone as an HTTP client would.
func responseBody(t *testing.T, r events.APIGatewayV2HTTPResponse) []byte {
	t.Helper()
	body := []byte(r.Body)
	if r.IsBase64Encoded {
		var err error
		if body, err = base64.StdEncoding.DecodeString(r.Body); err != nil {
			t.Fatalf("base64 body: %v", err)
		}
	}
	if header(r, "Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return body
}

func header(r events.APIGatewayV2HTTPResponse, name string) string {
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// kickoff starts an export through the API Gateway event path and returns
// the job id from the absolute Content-Location.
func kickoff(t *testing.T, method, path, query, body string) string {
	t.Helper()
	r := apiRequest(t, method, path, query, body, "")
	if r.StatusCode != http.StatusAccepted {
		t.Fatalf("kick-off %s %s?%s = %d: %s", method, path, query, r.StatusCode, r.Body)
	}
	loc := header(r, "Content-Location")
	if !strings.HasPrefix(loc, publicBase+"/bulkstatus/") {
		t.Fatalf("Content-Location = %q, want %s/bulkstatus/…", loc, publicBase)
	}
	return strings.TrimPrefix(loc, publicBase+"/bulkstatus/")
}

// waitDone polls the status route until the job is no longer running.
func waitDone(t *testing.T, job string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	return waitDoneWith(t, job, nil)
}

// waitDoneWith is waitDone with more request headers.
func waitDoneWith(t *testing.T, job string, extra map[string]string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	var r events.APIGatewayV2HTTPResponse
	if waitfor.Condition(waitLimit, 100*time.Millisecond, func() bool {
		r = apiRequestWith(t, http.MethodGet, "/fhir/bulkstatus/"+job, "", "", "", extra)
		if r.StatusCode != http.StatusAccepted {
			return true
		}
		if p := header(r, "X-Progress"); p == "" || len(p) >= 100 {
			t.Errorf("X-Progress = %q", p)
		}
		return false
	}) {
		return r
	}
	if e := need(t).execution(job); e != nil {
		t.Logf("execution output: %s", e.out.String())
	}
	t.Fatalf("job %s did not finish", job)
	return events.APIGatewayV2HTTPResponse{}
}

// manifest is the protocol's manifest type.
type manifest = bulkdata.Manifest

func completed(t *testing.T, job string) manifest {
	t.Helper()
	return completedWith(t, job, nil)
}

// completedWith is completed with more request headers, e.g. the
// Accept-Encoding of a client that takes a large manifest compressed.
func completedWith(t *testing.T, job string, extra map[string]string) manifest {
	t.Helper()
	r := waitDoneWith(t, job, extra)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("job %s: status %d: %s\n%s", job, r.StatusCode, r.Body, need(t).execution(job).out.String())
	}
	if _, err := http.ParseTime(header(r, "Expires")); err != nil {
		t.Errorf("Expires = %q", header(r, "Expires"))
	}
	var m manifest
	if err := json.Unmarshal(responseBody(t, r), &m); err != nil {
		t.Fatal(err)
	}
	if m.RequiresAccessToken {
		t.Error("requiresAccessToken = true for presigned links")
	}
	if m.Error == nil {
		t.Error("manifest has no error array")
	}
	return m
}

// download fetches every output file from its presigned URL, with no
// credentials, as a client would; MinIO checks the signatures.
func download(t *testing.T, m manifest) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	for _, o := range m.Output {
		if !strings.HasPrefix(o.URL, need(t).env["AWS_ENDPOINT_URL_S3"]+"/"+bucket+"/") || !strings.Contains(o.URL, "X-Amz-Signature=") {
			t.Fatalf("output url %q is not a presigned URL of the export bucket", o.URL)
		}
		if !strings.Contains(o.URL, "X-Amz-Security-Token=") || strings.Contains(o.URL, "X-Amz-Credential="+need(t).env["AWS_ACCESS_KEY_ID"]+"%2F") {
			t.Fatalf("output url %q is not signed by a download-signer session", o.URL)
		}
		resp, err := http.Get(o.URL)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET presigned %s = %d: %s", o.Type, resp.StatusCode, body)
		}
		n := 0
		for _, line := range bytes.Split(bytes.TrimRight(body, "\n"), []byte("\n")) {
			var h struct{ ResourceType, ID string }
			if err := json.Unmarshal(line, &h); err != nil || h.ResourceType != o.Type {
				t.Fatalf("%s file: bad line %.80s", o.Type, line)
			}
			key := h.ResourceType + "/" + h.ID
			if _, dup := got[key]; dup {
				t.Errorf("%s exported twice", key)
			}
			got[key] = append([]byte(nil), line...)
			n++
		}
		if o.Count == nil || *o.Count != int64(n) {
			t.Errorf("%s count = %v, file has %d lines", o.Type, o.Count, n)
		}
	}
	return got
}

func TestSystemExportOnAWS(t *testing.T) {
	cl := need(t)
	src := exporttest.ReadResources(t, cl.dataDir)
	// The first chunk of Observation fails after it wrote its files; the
	// retry must not duplicate a line.
	cl.mu.Lock()
	cl.failOnce["Observation.0000"] = true
	before := cl.invocations["export"]
	cl.mu.Unlock()
	job := kickoff(t, http.MethodGet, "/fhir/$export", "", "")
	m := completed(t, job)
	if m.Request != publicBase+"/$export" {
		t.Errorf("request = %q", m.Request)
	}
	exporttest.SameSet(t, download(t, m), src)
	cl.mu.Lock()
	injected, calls := cl.injected, cl.invocations["export"]-before
	cl.mu.Unlock()
	if injected == 0 {
		t.Error("the injected chunk failure never happened; the retry was not tested")
	}
	j, err := cl.api.Jobs.Get(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if calls <= j.Plan.Units+injected {
		t.Errorf("%d ExportChunk invocations for %d units: no unit looped through its cursor", calls, j.Plan.Units)
	}
}

func TestSinceGroupAndPatientOnAWS(t *testing.T) {
	cl := need(t)
	src := exporttest.ReadResources(t, cl.dataDir)
	since := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
	want := map[string][]byte{}
	for k, line := range src {
		var r struct {
			Meta struct{ LastUpdated time.Time } `json:"meta"`
		}
		json.Unmarshal(line, &r)
		if r.Meta.LastUpdated.After(since) {
			want[k] = line
		}
	}
	sinceJob := kickoff(t, http.MethodGet, "/fhir/$export", "_since="+since.Format(time.RFC3339), "")
	groupJob := kickoff(t, http.MethodGet, "/fhir/Group/care-team-a/$export", "", "")
	var one string
	for k := range src {
		if id, ok := strings.CutPrefix(k, "Patient/"); ok {
			one = id
			break
		}
	}
	body := `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/` + one + `"}}]}`
	patientJob := kickoff(t, http.MethodPost, "/fhir/Patient/$export", "", body)

	exporttest.SameSet(t, download(t, completed(t, sinceJob)), want)
	exporttest.SameSet(t, download(t, completed(t, groupJob)), exporttest.ExpectedCompartment(src, exporttest.GroupMembers(t, src, "care-team-a")))
	exporttest.SameSet(t, download(t, completed(t, patientJob)), exporttest.ExpectedCompartment(src, map[string]bool{one: true}))
}

func TestCancelOnAWS(t *testing.T) {
	cl := need(t)
	job := kickoff(t, http.MethodGet, "/fhir/$export", "", "")
	// Wait until the execution is exporting.
	waitfor.Condition(time.Minute, 20*time.Millisecond, func() bool {
		r := apiRequest(t, http.MethodGet, "/fhir/bulkstatus/"+job, "", "", "")
		return strings.HasPrefix(header(r, "X-Progress"), "exporting") || r.StatusCode == 200
	})
	if r := apiRequest(t, http.MethodDelete, "/fhir/bulkstatus/"+job, "", "", ""); r.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE = %d: %s", r.StatusCode, r.Body)
	}
	e := cl.execution(job)
	if e == nil {
		t.Fatal("no execution was started")
	}
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the execution was not stopped")
	}
	if !e.killed {
		t.Error("the execution ended by itself; StopExecution was not called")
	}
	for _, method := range []string{http.MethodGet, http.MethodDelete} {
		r := apiRequest(t, method, "/fhir/bulkstatus/"+job, "", "", "")
		if r.StatusCode != 404 || !strings.Contains(r.Body, `"OperationOutcome"`) {
			t.Errorf("%s after cancel = %d %s, want 404 OperationOutcome", method, r.StatusCode, r.Body)
		}
	}
	// A chunk in flight when the cancel landed removes what it wrote.
	var left int
	if !waitfor.Condition(10*time.Second, 100*time.Millisecond, func() bool {
		out, err := cl.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("exports/" + job + "/")})
		if err != nil {
			t.Fatal(err)
		}
		left = len(out.Contents)
		return left == 0
	}) {
		t.Errorf("%d objects of the cancelled job remain", left)
	}
}

func TestRetriedKickoffMakesOneJob(t *testing.T) {
	cl := need(t)
	a := apiRequest(t, http.MethodGet, "/fhir/$export", "_type=Patient", "", "retried-request-1")
	b := apiRequest(t, http.MethodGet, "/fhir/$export", "_type=Patient", "", "retried-request-1")
	if a.StatusCode != 202 || b.StatusCode != 202 || header(a, "Content-Location") != header(b, "Content-Location") {
		t.Fatalf("two kick-offs with one request id: %d %q, %d %q", a.StatusCode, header(a, "Content-Location"), b.StatusCode, header(b, "Content-Location"))
	}
	job := strings.TrimPrefix(header(a, "Content-Location"), publicBase+"/bulkstatus/")
	completed(t, job)
	if cl.execution(job) == nil {
		t.Error("no execution")
	}
}

func TestFailingUnitFailsTheJobOnAWS(t *testing.T) {
	cl := need(t)
	cl.mu.Lock()
	cl.failAlways["Condition.0000"] = true
	cl.mu.Unlock()
	defer func() { cl.mu.Lock(); delete(cl.failAlways, "Condition.0000"); cl.mu.Unlock() }()
	job := kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient,Condition", "")
	r := waitDone(t, job)
	if r.StatusCode != 500 || !strings.Contains(r.Body, `"OperationOutcome"`) || header(r, "Content-Type") != "application/fhir+json" {
		t.Fatalf("failed job: %d %s %s", r.StatusCode, header(r, "Content-Type"), r.Body)
	}
	// The execution ended in the ExportFailed state (its Cause), after
	// MarkFailed recorded the OperationOutcome above. The job is marked
	// failed before the execution ends: wait for its end.
	e := cl.execution(job)
	select {
	case <-e.done:
	case <-time.After(time.Minute):
		t.Fatal("the execution did not end within a minute of its job failing")
	}
	if out := e.out.String(); !strings.Contains(out, "the job is marked failed") {
		t.Errorf("execution did not end in ExportFailed: %s", out)
	}
}

// TestUpstreamSourceOnAWS runs the functions with a FHIR server as the
// source (BULKFHIR_SOURCE_URL): every chunk stops after 512 resources, so
// units resume from page cursors across Lambda invocations through the
// state machine.
func TestUpstreamSourceOnAWS(t *testing.T) {
	cl := need(t)
	src := exporttest.ReadResources(t, cl.dataDir)
	up := loadedUpstream(t, cl.dataDir, 200)
	cl.withUpstream(t, up)
	before := up.Requests()
	m := completed(t, kickoff(t, http.MethodGet, "/fhir/$export", "", ""))
	exporttest.SameSet(t, download(t, m), src)
	if up.Requests()-before < 10 {
		t.Errorf("%d upstream requests: the export did not read the upstream", up.Requests()-before)
	}
	members := exporttest.GroupMembers(t, src, "care-team-a")
	m = completed(t, kickoff(t, http.MethodGet, "/fhir/Group/care-team-a/$export", "", ""))
	exporttest.SameSet(t, download(t, m), exporttest.ExpectedCompartment(src, members))
}
