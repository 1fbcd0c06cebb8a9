package lambdasource

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
)

// TestUpstreamCredentialsFromSecretsManager reads the upstream token from a
// Secrets Manager endpoint (the real JSON protocol over HTTP) and uses it
// against the upstream.
func TestUpstreamCredentialsFromSecretsManager(t *testing.T) {
	up := httptest.NewServer(fhirtest.New(fhirtest.Options{Token: "from-the-secret"}))
	defer up.Close()
	var asked string
	sm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var in struct{ SecretId string }
		json.Unmarshal(body, &in)
		asked = r.Header.Get("X-Amz-Target") + " " + in.SecretId
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		json.NewEncoder(w).Encode(map[string]string{"ARN": in.SecretId, "Name": "upstream", "SecretString": `{"token":"from-the-secret"}`})
	}))
	defer sm.Close()
	awsCfg := aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
		BaseEndpoint: aws.String(sm.URL),
	}
	cfg := lambdaenv.Config{SourceURL: up.URL, SourceSecretARN: "arn:aws:secretsmanager:us-east-1:1:secret:upstream"}
	src, err := upstream(cfg, awsCfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if asked != "secretsmanager.GetSecretValue arn:aws:secretsmanager:us-east-1:1:secret:upstream" {
		t.Fatalf("Secrets Manager was asked %q", asked)
	}
	if err := src.Ready(context.Background()); err != nil {
		t.Fatalf("the upstream refused the secret's token: %v", err)
	}
}

// TestStatusOnlyHasNoSource: a status-only configuration gets NoSource,
// whatever source settings it carries.
func TestStatusOnlyHasNoSource(t *testing.T) {
	cfg := lambdaenv.Config{StatusOnly: true, SourceDir: t.TempDir()}
	src, err := New(cfg, aws.Config{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := src.(lambdaenv.NoSource); !ok {
		t.Fatalf("status source = %T, want lambdaenv.NoSource", src)
	}
}
