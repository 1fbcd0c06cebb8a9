package functions_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/lambdaauth"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// loadedUpstream is a FHIR server holding the test data (cl.dataDir or
// another directory), answering at most maxCount resources a page.
func loadedUpstream(t *testing.T, dir string, maxCount int) *fhirtest.Server {
	t.Helper()
	up := fhirtest.New(fhirtest.Options{MaxCount: maxCount})
	if err := up.LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	return up
}

// withUpstream makes up the functions' source until the test ends: served
// over HTTP and named by BULKFHIR_SOURCE_URL, with no S3 source, as a
// stack with bulkfhir:sourceUrl is configured. It returns the URL.
func (cl *cluster) withUpstream(t *testing.T, up *fhirtest.Server) string {
	t.Helper()
	hs := httptest.NewServer(up)
	t.Cleanup(hs.Close)
	cl.withEnv(t, map[string]string{
		settings.EnvSourceBucket: "", settings.EnvSourcePrefix: "", settings.EnvSourceURL: hs.URL,
	})
	return hs.URL
}

// tokenKeys reads bulkfhir's access token key as the API functions do at
// a cold start, from a Secrets Manager endpoint holding a test key.
func tokenKeys(t *testing.T, cl *cluster) (keys *smartauth.Keys, sm aws.Config) {
	t.Helper()
	srv := secretsManager(t, strings.Repeat("k3y", 22))
	sm = cl.awsCfg.Copy()
	sm.BaseEndpoint = aws.String(srv.URL)
	keys, err := lambdaauth.TokenKeys(context.Background(), sm, tokenSecretARN)
	if err != nil {
		t.Fatal(err)
	}
	return keys, sm
}

// tokenFunction is an API function of the given role configured as the
// stack deploys it by default (bulkfhir's own tokens, verified with keys),
// with the variables in extra set on top, logging to log.
func tokenFunction(t *testing.T, cl *cluster, role lambdaenv.Role, keys *smartauth.Keys, log *slog.Logger, extra map[string]string) func(context.Context, json.RawMessage) (any, error) {
	t.Helper()
	cfg, err := lambdaenv.Load(func(k string) string {
		if v, ok := extra[k]; ok {
			return v
		}
		switch k {
		case settings.EnvAuth:
			return ""
		case settings.EnvTokenSecretARN:
			return tokenSecretARN
		}
		return cl.env[k]
	}, role)
	if err != nil || cfg.Auth != settings.AuthBulkfhir {
		t.Fatalf("default API config: %+v %v", cfg.Auth, err)
	}
	f := *cl.api
	f.Config, f.Keys, f.log = cfg, keys, log
	return f.APIHandler()
}

// bearerCall sends one HTTP API request through an API function with
// token as its bearer ("" for none).
func bearerCall(t *testing.T, h func(context.Context, json.RawMessage) (any, error), method, path, query, token string) events.APIGatewayV2HTTPResponse {
	t.Helper()
	hd := map[string]string{"accept": "application/fhir+json", "prefer": "respond-async", "host": "bulkfhirapi.execute-api.us-east-1.amazonaws.com"}
	if token != "" {
		hd["authorization"] = "Bearer " + token
	}
	resp, err := gatewayCall(context.Background(), h, events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "ANY /fhir/{proxy+}", RawPath: path, RawQueryString: query, Headers: hd,
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID: exportID(), Stage: "$default", DomainName: "bulkfhirapi.execute-api.us-east-1.amazonaws.com",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: method, Path: path, Protocol: "HTTP/1.1"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// statusFunction is the status function as the stack deploys it (role
// status: the status and download routes, no source), configured like
// the other functions of the test (cl.api, withEnv included).
func statusFunction(t *testing.T, cl *cluster) (func(context.Context, json.RawMessage) (any, error), lambdaenv.Config) {
	t.Helper()
	cl.mu.Lock()
	f := *cl.api
	cl.mu.Unlock()
	cfg, err := lambdaenv.Load(f.getenv, lambdaenv.RoleStatus)
	if err != nil {
		t.Fatal(err)
	}
	f.Config = cfg
	return f.APIHandler(), cfg
}
