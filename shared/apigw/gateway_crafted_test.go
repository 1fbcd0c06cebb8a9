package apigw

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

type nopRunner struct{}

func (nopRunner) Start(context.Context, string) error { return nil }
func (nopRunner) Stop(context.Context, string) error  { return nil }

func event(method, rawPath, rawQuery, body string, b64 bool) events.APIGatewayV2HTTPRequest {
	ev := events.APIGatewayV2HTTPRequest{
		RawPath: rawPath, RawQueryString: rawQuery, Body: body, IsBase64Encoded: b64,
		Headers: map[string]string{"accept": "application/fhir+json", "prefer": "respond-async", "content-type": "application/fhir+json"},
	}
	ev.RequestContext.HTTP.Method = method
	ev.RequestContext.HTTP.Path = rawPath
	ev.RequestContext.DomainName = "api.example.org"
	return ev
}

// TestGatewayCraftedEvents: crafted API Gateway events are answered
// with a 4xx OperationOutcome, never a function error or a 5xx.
func TestGatewayCraftedEvents(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := &exporttest.Source{Lines: map[string][]string{"Patient": {`{"resourceType":"Patient","id":"a"}`}}, Groups: map[string][]string{"g": {"a"}}}
	svc := export.NewService(exporttest.NewJobStore(), exporttest.NewFileStore(), nopRunner{}, src, export.Config{}, quiet)
	h := NewGateway(api.New(svc, api.Config{Log: quiet})).serveV2
	cases := []struct {
		name   string
		ev     events.APIGatewayV2HTTPRequest
		status int
		want   string
	}{
		{"bad escape in path", event("GET", "/fhir/%zz/$export", "", "", false), 400, "percent-encoding"},
		{"bad base64 body", event("POST", "/fhir/$export", "", "!!!not base64", true), 400, "base64"},
		{"bad method", event("G(E)T", "/fhir/$export", "", "", false), 400, "method"},
		{"semicolon in query", event("GET", "/fhir/$export", "_type=Patient;", "", false), 400, "';'"},
		{"bad escape in query", event("GET", "/fhir/$export", "_type=%zz", "", false), 400, "percent-encoding"},
		{"too many parameters", event("GET", "/fhir/$export", strings.Repeat("_pretty=1&", 101), "", false), 400, "more than 100"},
		{"long job id", event("GET", "/fhir/bulkstatus/"+strings.Repeat("x", 3000), "", "", false), 404, "no such export"},
		{"group dot dot", event("GET", "/fhir/Group/../$export", "", "", false), 400, "not a FHIR id"},
		{"good base64 body", event("POST", "/fhir/$export", "", "eyJyZXNvdXJjZVR5cGUiOiJQYXJhbWV0ZXJzIn0=", true), 202, "accepted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := h(context.Background(), tc.ev)
			if err != nil {
				t.Fatalf("function error %v, want a response", err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status = %d, want %d: %s", resp.StatusCode, tc.status, resp.Body)
			}
			var oo struct{ ResourceType string }
			if json.Unmarshal([]byte(resp.Body), &oo) != nil || oo.ResourceType != "OperationOutcome" || !strings.Contains(resp.Body, tc.want) {
				t.Errorf("body = %s, want an OperationOutcome mentioning %q", resp.Body, tc.want)
			}
		})
	}
}
