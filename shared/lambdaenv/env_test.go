package lambdaenv

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/bulkfhir/bulkfhir/shared/apigw"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

func TestLoadSources(t *testing.T) {
	base := map[string]string{settings.EnvTable: "t", settings.EnvBucket: "b"}
	cases := []struct {
		name string
		env  map[string]string
		err  string
	}{
		{"bucket", map[string]string{settings.EnvSourceBucket: "src"}, ""},
		{"dir", map[string]string{settings.EnvSourceDir: "/data"}, ""},
		{"upstream", map[string]string{settings.EnvSourceURL: "https://fhir.example.org/r4", settings.EnvSourceSecretARN: "arn:aws:secretsmanager:us-east-1:1:secret:x"}, ""},
		{"none", map[string]string{}, "no source"},
		{"two", map[string]string{settings.EnvSourceBucket: "src", settings.EnvSourceURL: "https://x"}, "set one source"},
		{"bad url", map[string]string{settings.EnvSourceURL: "ftp://x"}, "not an http(s) URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := Load(func(k string) string { return env[k] }, RoleTask)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// TestStatusFunctionReadsNoSource: the status function loads without a
// source (and ignores one), builds no source client, and answers only the
// status route.
func TestStatusFunctionReadsNoSource(t *testing.T) {
	env := map[string]string{settings.EnvTable: "t", settings.EnvBucket: "b", settings.EnvStateMachine: "arn:aws:states:us-east-1:1:stateMachine:x", settings.EnvAuth: settings.AuthNone}
	cfg, err := Load(func(k string) string { return env[k] }, RoleStatus)
	if err != nil || !cfg.StatusOnly {
		t.Fatalf("load = %+v, %v", cfg, err)
	}
	env[settings.EnvSourceURL] = "https://fhir.example.org"
	env[settings.EnvSourceSecretARN] = "arn:aws:secretsmanager:us-east-1:1:secret:x" // would be read at cold start
	if cfg, err = Load(func(k string) string { return env[k] }, RoleStatus); err != nil || cfg.SourceURL != "" || cfg.SourceSecretARN != "" {
		t.Fatalf("status with source settings: %+v, %v", cfg, err)
	}
	awsCfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKID", "secret", ""), BaseEndpoint: aws.String("http://127.0.0.1:1")}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// As functions/status wires it.
	svc := export.NewService(Jobs(cfg, awsCfg), Files(cfg, S3(awsCfg)), nil, NoSource{}, cfg.Export(), quiet)
	h := apigw.Handler(svc, apigw.Options{Auth: cfg.Auth, StatusOnly: cfg.StatusOnly, Log: quiet})
	for _, path := range []string{"/fhir/metadata", "/fhir/Group/g", "/fhir/$export"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "status route only") {
			t.Errorf("%s: %d %s", path, rec.Code, rec.Body)
		}
	}
}

func TestLoadAuth(t *testing.T) {
	base := map[string]string{settings.EnvTable: "t", settings.EnvBucket: "b", settings.EnvStateMachine: "arn:sm", settings.EnvSourceDir: "/data"}
	for _, tc := range []struct {
		name, auth, secret, want string // want "" = a configuration error
	}{
		{"default is bulkfhir's tokens", "", "arn:secret", settings.AuthBulkfhir},
		{"default without the key", "", "", ""},
		{"gateway", settings.AuthGateway, "", settings.AuthGateway},
		{"none", settings.AuthNone, "", settings.AuthNone},
		{"unknown", "basic", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{settings.EnvAuth: tc.auth, settings.EnvTokenSecretARN: tc.secret}
			for k, v := range base {
				env[k] = v
			}
			c, err := Load(func(k string) string { return env[k] }, RoleAPI)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("accepted: %+v", c)
				}
				return
			}
			if err != nil || c.Auth != tc.want {
				t.Fatalf("Auth = %q, %v; want %s", c.Auth, err, tc.want)
			}
			wantURL := map[string]string{settings.AuthBulkfhir: "/auth/token", settings.AuthGateway: "", settings.AuthNone: ""}[tc.want]
			if got := apigw.TokenURL(c.Auth, c.TokenURL); got != wantURL {
				t.Errorf("advertised token URL %q, want %q", got, wantURL)
			}
		})
	}
	// Task functions need no authorization settings.
	if _, err := Load(func(k string) string { return base[k] }, RoleTask); err != nil {
		t.Errorf("task config: %v", err)
	}
}
