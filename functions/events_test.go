package functions_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dynamoauth"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/retention"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// TestEvents feeds every file in events/ through the handler it is for and
// checks the response, in an order that follows one job ("example-job")
// through plan, export, finalize, status and cancel.
func TestEvents(t *testing.T) {
	cl := need(t)
	ctx := context.Background()
	files, err := filepath.Glob(filepath.Join(cl.root, "events", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no events: %v", err)
	}
	// The job the task and status events name, owned by the anonymous
	// client the API events come from.
	now := time.Now().UTC()
	if err := cl.api.Jobs.Create(ctx, &export.Job{
		ID: "example-job", Owner: "anonymous", Status: export.StatusAccepted, RequestURL: publicBase + "/$export?_type=Patient",
		Request:         bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON, Types: []string{"Patient"}},
		TransactionTime: now, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(time.Hour),
	}); err != nil {
		t.Fatal(err)
	}
	order := []string{"kickoff-", "metadata-", "task-plan", "task-export", "task-finalize", "task-fail", "task-dispatch", "status-get", "download-", "status-delete", "token-", "authorizer-", "expire-"}
	rank := func(name string) int {
		for i, p := range order {
			if strings.HasPrefix(name, p) {
				return i
			}
		}
		t.Fatalf("events/%s: no test knows this event; add it to TestEvents", name)
		return -1
	}
	byRank := map[int][]string{}
	for _, f := range files {
		byRank[rank(filepath.Base(f))] = append(byRank[rank(filepath.Base(f))], f)
	}
	seen := 0
	for i := range order {
		for _, f := range byRank[i] {
			name := strings.TrimSuffix(filepath.Base(f), ".json")
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			seen++
			t.Run(name, func(t *testing.T) {
				if strings.HasPrefix(name, "task-") {
					checkTask(t, name, raw)
					return
				}
				if strings.HasPrefix(name, "token-") || strings.HasPrefix(name, "authorizer-") {
					checkAuthEvent(t, name, raw)
					return
				}
				if strings.HasPrefix(name, "expire-") {
					checkExpireEvent(t, raw)
					return
				}
				if strings.HasPrefix(name, "download-") {
					checkDownloadEvent(t, raw)
					return
				}
				out, err := cl.api.APIHandler()(ctx, raw)
				if err != nil {
					t.Fatal(err)
				}
				resp := asV2(t, name, out)
				want := map[string]int{"kickoff-invalid": 400, "metadata-get": 200, "status-get": 200, "status-delete": 202}[strings.TrimSuffix(name, "-rest")]
				if strings.HasPrefix(name, "kickoff-") && name != "kickoff-invalid" {
					want = 202
				}
				if resp.StatusCode != want {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, resp.Body)
				}
				switch {
				case want == 202 && strings.HasPrefix(name, "kickoff-"):
					// The harness sets a public base URL, which wins over the
					// REST API's stage (token-discovery-rest checks the stage).
					if !strings.HasPrefix(header(resp, "Content-Location"), publicBase+"/bulkstatus/") {
						t.Errorf("Content-Location = %q", header(resp, "Content-Location"))
					}
				case name == "status-get":
					var m manifest
					if err := json.Unmarshal([]byte(resp.Body), &m); err != nil || len(m.Output) != 1 || m.Output[0].Type != "Patient" {
						t.Errorf("manifest = %s", resp.Body)
					}
				case name == "metadata-get":
					if !strings.Contains(resp.Body, `"CapabilityStatement"`) {
						t.Errorf("body = %.200s", resp.Body)
					}
				case want >= 400:
					if !strings.Contains(resp.Body, `"OperationOutcome"`) {
						t.Errorf("body = %s", resp.Body)
					}
				}
			})
		}
	}
	if seen != len(files) {
		t.Errorf("ran %d of %d events", seen, len(files))
	}
}

// checkTask runs a state machine task event through its function's handler.
func checkTask(t *testing.T, name string, raw []byte) {
	cl := need(t)
	// task-<function>[-<variant>].json
	fn, _, _ := strings.Cut(strings.TrimPrefix(name, "task-"), "-")
	h := cl.handlerFor(fn)
	if h == nil {
		t.Fatalf("no handler for %s", fn)
	}
	out, err := h.Invoke(context.Background(), raw)
	if err != nil {
		t.Fatalf("%s: %s: %v", fn, errorType(err), err)
	}
	switch fn {
	case "plan":
		var r export.PlanResult
		if json.Unmarshal(out, &r) != nil || r.Units == 0 || r.PlanKey != export.PlanKey(r.JobID) {
			t.Errorf("plan result = %s", out)
		}
	case "export":
		var r export.ChunkResult
		if json.Unmarshal(out, &r) != nil || r.Cursor == nil || r.Cursor.Resources != testPatients {
			t.Errorf("export result = %s", out)
		}
	case "finalize":
		var r export.FinalizeResult
		if json.Unmarshal(out, &r) != nil || r.Resources != testPatients {
			t.Errorf("finalize result = %s", out)
		}
	case "dispatch":
		// A sweep: the kick-off events' jobs run or wait; never more
		// than the running limit run.
		var r export.SweepReport
		if json.Unmarshal(out, &r) != nil || r.Running > settings.DefaultMaxRunningJobs || r.Running+r.Queued == 0 {
			t.Errorf("dispatch result = %s", out)
		}
	case "fail":
		// The job completed, so the failure step leaves it as it is.
		j, err := cl.api.Jobs.Get(context.Background(), "example-job")
		if err != nil || j.Status != export.StatusCompleted {
			t.Errorf("after fail: %+v %v", j, err)
		}
	}
}

// TestCraftedEvents: API Gateway events no real client sends are answered
// by the kickoff/status handler with a 4xx OperationOutcome, never a
// function error (issue 18).
func TestCraftedEvents(t *testing.T) {
	cl := need(t)
	base, err := os.ReadFile(filepath.Join(cl.root, "events", "kickoff-system-get.json"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		edit   func(ev *events.APIGatewayV2HTTPRequest)
		status int
		want   string
	}{
		{"bad escape in path", func(ev *events.APIGatewayV2HTTPRequest) { ev.RawPath = "/fhir/%zz/$export" }, 400, "could not be read"},
		{"bad base64 body", func(ev *events.APIGatewayV2HTTPRequest) {
			ev.RequestContext.HTTP.Method, ev.Body, ev.IsBase64Encoded = "POST", "***", true
		}, 400, "base64"},
		{"semicolon in query", func(ev *events.APIGatewayV2HTTPRequest) { ev.RawQueryString = "_type=Patient;" }, 400, "';'"},
		{"too many parameters", func(ev *events.APIGatewayV2HTTPRequest) { ev.RawQueryString = strings.Repeat("_pretty=1&", 101) }, 400, "more than 100"},
		{"3000-character job id", func(ev *events.APIGatewayV2HTTPRequest) {
			ev.RawPath = "/fhir/bulkstatus/" + strings.Repeat("a", 3000)
			ev.RequestContext.HTTP.Path = ev.RawPath
		}, 404, "no such export"},
		{"group dot dot", func(ev *events.APIGatewayV2HTTPRequest) { ev.RawPath = "/fhir/Group/../$export" }, 400, "not a FHIR id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ev events.APIGatewayV2HTTPRequest
			if err := json.Unmarshal(base, &ev); err != nil {
				t.Fatal(err)
			}
			tc.edit(&ev)
			resp, err := gatewayCall(context.Background(), cl.api.APIHandler(), ev)
			if err != nil {
				t.Fatalf("function error %v, want a response", err)
			}
			if resp.StatusCode != tc.status || !strings.Contains(resp.Body, `"OperationOutcome"`) || !strings.Contains(resp.Body, tc.want) {
				t.Errorf("got %d %s; want %d and an OperationOutcome mentioning %q", resp.StatusCode, resp.Body, tc.status, tc.want)
			}
		})
	}
}

// checkAuthEvent runs a token or authorizer event through the handler the
// token and authorizer functions start, with a key of the test's own.
func checkAuthEvent(t *testing.T, name string, raw []byte) {
	cl := need(t)
	ctx := context.Background()
	keys, err := smartauth.NewHMACKeys([]byte(strings.Repeat("events-key", 4)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(name, "authorizer-") {
		out, err := apigw.Authorizers(keys)(ctx, raw)
		switch resp := out.(type) {
		case events.APIGatewayV2CustomAuthorizerSimpleResponse:
			if err != nil || resp.IsAuthorized {
				t.Errorf("a token bulkfhir did not sign was authorized: %+v %v", resp, err)
			}
		case events.APIGatewayCustomAuthorizerResponse:
			// REST API TOKEN authorizer: refusal is the "Unauthorized" error.
			if err == nil || err.Error() != "Unauthorized" {
				t.Errorf("a token bulkfhir did not sign: %+v %v, want the Unauthorized error", resp, err)
			}
		default:
			t.Fatalf("authorizer answered %T, %v", out, err)
		}
		return
	}
	ddb := dynamodb.NewFromConfig(cl.awsCfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	h := lambdaauth.TokenServer(lambdaauth.Config{AuthTable: "auth-events"}, keys, dynamoauth.New(ddb, "auth-events"), slog.New(slog.DiscardHandler))
	out, err := apigw.NewGateway(h).Invoke(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	resp := asV2(t, name, out)
	switch name {
	case "token-discovery", "token-discovery-rest":
		base := "https://bulkfhirapi.execute-api.us-east-1.amazonaws.com"
		if name == "token-discovery-rest" {
			base += "/prod"
		}
		if resp.StatusCode != 200 || !strings.Contains(resp.Body, `"token_endpoint":"`+base+`/fhir/auth/token"`) {
			t.Errorf("discovery = %d %s", resp.StatusCode, resp.Body)
		}
	case "token-post", "token-post-rest":
		if resp.StatusCode != 400 || !strings.Contains(resp.Body, `"unsupported_grant_type"`) {
			t.Errorf("token = %d %s", resp.StatusCode, resp.Body)
		}
	default:
		t.Fatalf("events/%s.json: no check for this token event", name)
	}
}

// asV2 reads either API's response into one shape; the "-rest" events
// must be answered in the REST API's format and the others in 2.0's.
func asV2(t *testing.T, name string, out any) events.APIGatewayV2HTTPResponse {
	t.Helper()
	rest := strings.HasSuffix(name, "-rest")
	switch r := out.(type) {
	case events.APIGatewayV2HTTPResponse:
		if rest {
			t.Fatalf("a REST API event was answered in payload format 2.0")
		}
		return r
	case events.APIGatewayProxyResponse:
		if !rest {
			t.Fatalf("a 2.0 event was answered in the REST API's format")
		}
		h := map[string]string{}
		for k, v := range r.Headers {
			h[k] = v
		}
		for k, v := range r.MultiValueHeaders {
			h[k] = strings.Join(v, ",")
		}
		return events.APIGatewayV2HTTPResponse{StatusCode: r.StatusCode, Headers: h, Body: r.Body}
	}
	t.Fatalf("answered with %T", out)
	return events.APIGatewayV2HTTPResponse{}
}

// checkExpireEvent runs the EventBridge schedule's event through the
// expire function's handler (functions/expire, retention.Sweep).
func checkExpireEvent(t *testing.T, raw []byte) {
	cl := need(t)
	cfg, err := lambdaenv.LoadSweep(func(k string) string { return cl.env[k] })
	if err != nil {
		t.Fatal(err)
	}
	noChecksum := func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true }
	out, err := lambda.NewHandler(lambdaenv.SweepHandler(cfg, cl.awsCfg, slog.New(slog.DiscardHandler), noChecksum)).Invoke(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	var r retention.Result
	if err := json.Unmarshal(out, &r); err != nil || r.Failed != 0 {
		t.Errorf("expire result = %s (%v)", out, err)
	}
}

// checkDownloadEvent runs a download-route event through the status
// function (it serves the route in both download modes): the exported
// file is a 307 to a presigned link that reads it.
func checkDownloadEvent(t *testing.T, raw []byte) {
	status, _ := statusFunction(t, need(t))
	out, err := status(context.Background(), raw)
	if err != nil {
		t.Fatal(err)
	}
	resp := asV2(t, "download", out)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("status %d, want 307: %s", resp.StatusCode, resp.Body)
	}
	got, err := http.Get(header(resp, "Location"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != http.StatusOK || !strings.Contains(string(body), `"resourceType":"Patient"`) {
		t.Errorf("following the redirect: %d %.200s", got.StatusCode, body)
	}
}
