package functions_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// lambdaAnswer is an API function's answer as a client sees it, with the
// size of the response event the Lambda service measures against its cap.
type lambdaAnswer struct {
	status, eventBytes int
	headers            map[string]string
	body               []byte
}

// gatewayInvoke sends one request through an API function as API Gateway
// would: an HTTP API (payload 2.0) or REST API (proxy, stage prod) event,
// JSON in and out; the body comes back as a client reads it (base64 and
// gzip undone).
func gatewayInvoke(t *testing.T, h func(context.Context, json.RawMessage) (any, error), rest bool, method, path string, hd map[string]string) lambdaAnswer {
	t.Helper()
	const domain = "bulkfhirapi.execute-api.us-east-1.amazonaws.com"
	headers := map[string]string{"accept": "application/fhir+json", "host": domain, "x-forwarded-proto": "https"}
	for k, v := range hd {
		headers[k] = v
	}
	var ev any = events.APIGatewayV2HTTPRequest{Version: "2.0", RouteKey: method + " /fhir/bulkstatus/{job}", RawPath: path, Headers: headers,
		RequestContext: events.APIGatewayV2HTTPRequestContext{RequestID: exportID(), Stage: "$default", DomainName: domain,
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: path, Protocol: "HTTP/1.1"}}}
	if rest {
		ev = events.APIGatewayProxyRequest{Resource: "/fhir/bulkstatus/{job}", Path: path, HTTPMethod: method, Headers: headers,
			RequestContext: events.APIGatewayProxyRequestContext{RequestID: exportID(), Stage: "prod", DomainName: domain}}
	}
	raw, _ := json.Marshal(ev)
	out, err := h(context.Background(), raw)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	a := lambdaAnswer{eventBytes: eventSize(out), headers: map[string]string{}}
	var body string
	var b64 bool
	switch r := out.(type) {
	case events.APIGatewayV2HTTPResponse:
		a.status, body, b64 = r.StatusCode, r.Body, r.IsBase64Encoded
		for k, v := range r.Headers {
			a.headers[http.CanonicalHeaderKey(k)] = v
		}
	case events.APIGatewayProxyResponse:
		a.status, body, b64 = r.StatusCode, r.Body, r.IsBase64Encoded
		for k, v := range r.MultiValueHeaders {
			a.headers[http.CanonicalHeaderKey(k)] = v[0]
		}
	default:
		t.Fatalf("answered %T", out)
	}
	a.body = []byte(body)
	if b64 {
		if a.body, err = base64.StdEncoding.DecodeString(body); err != nil {
			t.Fatal(err)
		}
	}
	if a.headers["Content-Encoding"] == "gzip" {
		a.body = responseBody(t, events.APIGatewayV2HTTPResponse{Body: body, IsBase64Encoded: b64, Headers: a.headers})
	}
	return a
}

// TestManifestOverTheLambdaLimitOnAWS: the complete manifest of a job
// with 15,000 files, which with presigned links is a status response over
// the Lambda's 6 MB cap, reaches a client that does not allow partial
// manifests on both API types, with and without gzip: with links to the
// status function's download route (requiresAccessToken true) where the
// presigned links do not fit as sent, with the presigned links where
// they do (the HTTP API compresses for a client that accepts gzip). A
// route link is a 307 to a presigned MinIO link that downloads the file.
// Negative control: the same job through the status handler without the
// size check (the code before it) answers over the cap.
func TestManifestOverTheLambdaLimitOnAWS(t *testing.T) {
	cl := need(t)
	const files = 15000
	job := manyFilesJob(t, cl, files, false)
	status, cfg := statusFunction(t, cl)
	status0 := "/fhir/bulkstatus/" + job

	// The first file exists, so its route link can be followed.
	key := cfg.BucketPrefix + export.FileKey(job, export.UnitID("Observation", 0), "Observation", 0)
	line := []byte(`{"resourceType":"Observation","id":"o1"}` + "\n")
	if _, err := cl.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(line)}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		rest, gzip bool
		route      bool
	}{
		{"HTTP API", false, false, true},
		{"HTTP API, gzip", false, true, false},
		{"REST API", true, false, true},
		{"REST API, gzip", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd := map[string]string{}
			if tc.gzip {
				hd["accept-encoding"] = "gzip, deflate, br"
			}
			a := gatewayInvoke(t, status, tc.rest, http.MethodGet, status0, hd)
			if a.eventBytes > maxLambdaResponse {
				t.Fatalf("response event of %d bytes, over the %d-byte Lambda limit", a.eventBytes, maxLambdaResponse)
			}
			var m bulkdata.Manifest
			if a.status != http.StatusOK || json.Unmarshal(a.body, &m) != nil {
				t.Fatalf("status %d: %.300s", a.status, a.body)
			}
			if len(m.Output) != files || m.RequiresAccessToken != tc.route {
				t.Fatalf("%d files, requiresAccessToken %v; want %d and %v", len(m.Output), m.RequiresAccessToken, files, tc.route)
			}
			base := publicBase // BULKFHIR_PUBLIC_BASE_URL, on both API types
			for _, o := range m.Output {
				isRoute := strings.HasPrefix(o.URL, base+"/bulkfiles/") && !strings.Contains(o.URL, "?")
				isSigned := strings.HasPrefix(o.URL, cl.env["AWS_ENDPOINT_URL_S3"]+"/"+bucket+"/") && strings.Contains(o.URL, "X-Amz-Signature=")
				if (tc.route && !isRoute) || (!tc.route && !isSigned) {
					t.Fatalf("link %.160s; want route links %v", o.URL, tc.route)
				}
			}
			t.Logf("route links %v: response event %d bytes", tc.route, a.eventBytes)
			if !tc.route {
				return
			}
			if want := base + "/bulkfiles/" + strings.TrimPrefix(key, cfg.BucketPrefix); m.Output[0].URL != want {
				t.Fatalf("first link %s, want %s", m.Output[0].URL, want)
			}
			path := "/fhir" + strings.TrimPrefix(m.Output[0].URL, base)
			d := gatewayInvoke(t, status, tc.rest, http.MethodGet, path, nil)
			if d.status != http.StatusTemporaryRedirect {
				t.Fatalf("GET %s = %d %s, want 307", path, d.status, d.body)
			}
			resp, err := http.Get(d.headers["Location"])
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, line) {
				t.Errorf("following the redirect: %d %q, want 200 %q", resp.StatusCode, body, line)
			}
		})
	}

	// Negative control: the status handler without the size check.
	f := *cl.api
	svc := f.service()
	unchecked := apigw.NewGateway(api.New(svc, api.Config{Auth: api.Anonymous{}, Log: f.log})).Invoke
	for _, rest := range []bool{false, true} {
		if a := gatewayInvoke(t, unchecked, rest, http.MethodGet, status0, nil); a.status != http.StatusOK || a.eventBytes <= maxLambdaResponse {
			t.Errorf("without the size check (REST %v): %d, %d bytes; want 200 over the %d-byte limit", rest, a.status, a.eventBytes, maxLambdaResponse)
		}
	}
	if cfg.Auth != settings.AuthNone {
		t.Fatalf("auth %q: the test expects the anonymous client", cfg.Auth)
	}
}
