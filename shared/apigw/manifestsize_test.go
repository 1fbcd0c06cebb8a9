package apigw_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

const host = "bulkfhirapi.execute-api.us-east-1.amazonaws.com"

// awsLinks is a file store whose links are as long as real presigned S3
// URLs signed by a role session (about 1.3 KB: the session token is
// most of it, shared by every link; the signature differs per link), and
// which answers route downloads with a 307 to such a link.
type awsLinks struct{ *exporttest.FileStore }

var sessionToken = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQ"), 15))

func (awsLinks) URL(_ context.Context, key string, _ time.Time) (string, error) {
	sig := sha256.Sum256([]byte(key))
	return "https://bulkfhir-exports-123456789012.s3.us-east-1.amazonaws.com/exports/" + key +
		"?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAXAMPLEXAMPLEXAMP%2F20261201%2Fus-east-1%2Fs3%2Faws4_request" +
		"&X-Amz-Date=20261201T215700Z&X-Amz-Expires=3300&X-Amz-Security-Token=" + strings.ReplaceAll(sessionToken, "+", "%2B") +
		"&X-Amz-SignedHeaders=host&x-id=GetObject&X-Amz-Signature=" + hex.EncodeToString(sig[:]), nil
}

func (s awsLinks) DeliverFile(w http.ResponseWriter, r *http.Request, key string) {
	u, _ := s.URL(r.Context(), key, time.Time{})
	http.Redirect(w, r, u, http.StatusTemporaryRedirect)
}

// completedJob is a completed, unpaged system export of files one-line
// Observation files.
func completedJob(t *testing.T, jobs *exporttest.JobStore, files int) string {
	t.Helper()
	return exporttest.CompletedWithFiles(t, jobs, api.AnonymousClient, "https://"+host+"/fhir/$export", files, 10, false)
}

// answer is a status response as a client sees it, and the size of the
// Lambda response event that carried it.
type answer struct {
	status, eventBytes int
	headers            map[string]string
	body               []byte
}

// invoke sends GET status through the gateway as API Gateway would: an
// HTTP API (payload 2.0) or REST API (proxy) event, JSON in and out.
func invoke(t *testing.T, invoke func(context.Context, json.RawMessage) (any, error), rest, gzipOK bool, path string) answer {
	t.Helper()
	hd := map[string]string{"accept": "application/fhir+json", "host": host, "x-forwarded-proto": "https"}
	if gzipOK {
		hd["accept-encoding"] = "gzip, deflate, br"
	}
	var ev any = events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: "GET /fhir/bulkstatus/{job}", RawPath: path, Headers: hd,
		RequestContext: events.APIGatewayV2HTTPRequestContext{RequestID: "r1", DomainName: host, Stage: "$default",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: http.MethodGet, Path: path}}}
	if rest {
		ev = events.APIGatewayProxyRequest{Resource: "/fhir/bulkstatus/{job}", Path: path, HTTPMethod: http.MethodGet, Headers: hd,
			RequestContext: events.APIGatewayProxyRequestContext{RequestID: "r1", DomainName: host, Stage: "prod"}}
	}
	raw, _ := json.Marshal(ev)
	out, err := invoke(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	// What the Lambda service measures against its 6 MB cap: the event as
	// the runtime encodes it (encoding/json without HTML escaping).
	var event bytes.Buffer
	enc := json.NewEncoder(&event)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		t.Fatal(err)
	}
	var a answer
	var body string
	var b64 bool
	switch r := out.(type) {
	case events.APIGatewayV2HTTPResponse:
		a.status, a.headers, body, b64 = r.StatusCode, r.Headers, r.Body, r.IsBase64Encoded
	case events.APIGatewayProxyResponse:
		a.status, body, b64 = r.StatusCode, r.Body, r.IsBase64Encoded
		a.headers = map[string]string{}
		for k, v := range r.MultiValueHeaders {
			a.headers[k] = v[0]
		}
		for k, v := range r.Headers {
			a.headers[k] = v
		}
	default:
		t.Fatalf("answered %T", out)
	}
	a.eventBytes, a.body = event.Len()-1, []byte(body)
	if b64 {
		if a.body, err = base64.StdEncoding.DecodeString(body); err != nil {
			t.Fatal(err)
		}
	}
	if a.headers["Content-Encoding"] == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(a.body))
		if err != nil {
			t.Fatal(err)
		}
		if a.body, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// TestManifestsOverTheLambdaLimit: a complete manifest whose presigned
// links (as long as real AWS ones) would make the status response larger
// than a Lambda may answer is sent with links to the API's download route
// (requiresAccessToken true), on both API types, with and without gzip;
// a manifest too large even so is a 406 OperationOutcome that says to ask
// for partial manifests. Every answer fits the 6 MB cap as encoded, and
// the same jobs served as before (no size check) cross it.
func TestManifestsOverTheLambdaLimit(t *testing.T) {
	jobs := exporttest.NewJobStore()
	files := awsLinks{exporttest.NewFileStore()}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	svc := export.NewService(jobs, files, nil, &exporttest.Source{}, export.Config{}, quiet)
	status := apigw.NewGateway(apigw.Handler(svc, apigw.Options{Auth: settings.AuthNone, StatusOnly: true, Deliver: files, Log: quiet})).Invoke
	kickoff := apigw.NewGateway(apigw.Handler(svc, apigw.Options{Auth: settings.AuthNone, Log: quiet})).Invoke
	// Today's status function: the handler with no size check.
	unchecked := apigw.NewGateway(api.New(svc, api.Config{Deliver: files, Log: quiet})).Invoke

	small, large, huge := completedJob(t, jobs, 3000), completedJob(t, jobs, 6000), completedJob(t, jobs, 40000)
	const (
		presigned = "presigned"
		route     = "route"
		refused   = "refused"
	)
	for _, tc := range []struct {
		name       string
		fn         func(context.Context, json.RawMessage) (any, error)
		job        string
		rest, gzip bool
		files      int
		want       string
	}{
		{"3,000 files, HTTP API", status, small, false, false, 3000, presigned},
		{"3,000 files, REST API", status, small, true, false, 3000, presigned},
		{"6,000 files, HTTP API", status, large, false, false, 6000, route},
		{"6,000 files, HTTP API, gzip", status, large, false, true, 6000, presigned},
		{"6,000 files, REST API", status, large, true, false, 6000, route},
		{"6,000 files, REST API, gzip", status, large, true, true, 6000, route},
		{"40,000 files, HTTP API", status, huge, false, false, 40000, refused},
		{"40,000 files, HTTP API, gzip", status, huge, false, true, 40000, presigned},
		{"40,000 files, REST API, gzip", status, huge, true, true, 40000, refused},
		{"6,000 files, a function without the download route", kickoff, large, false, false, 6000, refused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := invoke(t, tc.fn, tc.rest, tc.gzip, "/fhir/bulkstatus/"+tc.job)
			if a.eventBytes > apigw.MaxResponseBytes {
				t.Fatalf("response event of %d bytes, over the %d-byte Lambda limit", a.eventBytes, apigw.MaxResponseBytes)
			}
			if tc.want == refused {
				if a.status != http.StatusNotAcceptable || !bytes.Contains(a.body, []byte(`"OperationOutcome"`)) ||
					!bytes.Contains(a.body, []byte("allowPartialManifests=true")) || !bytes.Contains(a.body, []byte(fmt.Sprint(tc.files))) {
					t.Fatalf("status %d %.300s; want 406 with an OperationOutcome naming allowPartialManifests", a.status, a.body)
				}
				return
			}
			var m bulkdata.Manifest
			if a.status != http.StatusOK || json.Unmarshal(a.body, &m) != nil {
				t.Fatalf("status %d %.300s", a.status, a.body)
			}
			if len(m.Output) != tc.files {
				t.Errorf("%d files listed, want %d", len(m.Output), tc.files)
			}
			prefix, token := "https://bulkfhir-exports-", false
			if tc.want == route {
				prefix, token = "https://"+host+"/fhir/bulkfiles/", true
				if tc.rest {
					prefix = "https://" + host + "/prod/fhir/bulkfiles/"
				}
			}
			if m.RequiresAccessToken != token {
				t.Errorf("requiresAccessToken %v, want %v", m.RequiresAccessToken, token)
			}
			seen := map[string]bool{}
			for _, o := range m.Output {
				if !strings.HasPrefix(o.URL, prefix) {
					t.Fatalf("link %.120s: want %s links starting %s", o.URL, tc.want, prefix)
				}
				seen[o.URL] = true
			}
			if len(seen) != tc.files {
				t.Errorf("%d distinct links, want %d", len(seen), tc.files)
			}
			if tc.want == route {
				// A route link is answered by the status function: a 307
				// to a presigned link, after the usual checks.
				path := strings.TrimPrefix(m.Output[0].URL, "https://"+host)
				path = strings.TrimPrefix(path, "/prod")
				d := invoke(t, status, tc.rest, false, path)
				if d.status != http.StatusTemporaryRedirect || !strings.HasPrefix(d.headers["Location"], "https://bulkfhir-exports-") {
					t.Errorf("GET %s = %d, Location %.80q; want a 307 to a presigned link", path, d.status, d.headers["Location"])
				}
			}
			t.Logf("%s links, response event %d bytes", tc.want, a.eventBytes)
		})
	}

	// Negative control: served as before, without the size check, the
	// larger manifests cross the limit (the Lambda service would refuse
	// the response and API Gateway answer 502).
	for _, tc := range []struct {
		name       string
		job        string
		rest, gzip bool
	}{
		{"6,000 files, HTTP API", large, false, false},
		{"6,000 files, REST API, gzip", large, true, true},
		{"40,000 files, REST API", huge, true, false},
	} {
		if a := invoke(t, unchecked, tc.rest, tc.gzip, "/fhir/bulkstatus/"+tc.job); a.eventBytes <= apigw.MaxResponseBytes {
			t.Errorf("unchecked, %s: %d bytes, want over %d: the check above proves nothing", tc.name, a.eventBytes, apigw.MaxResponseBytes)
		}
	}
}
