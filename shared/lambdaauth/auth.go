// Package lambdaauth wires the token and authorizer functions, and reads
// the access token key the API functions verify tokens with: their
// configuration (every problem reported at once) and the key from Secrets
// Manager, read once per container. It links no export adapter.
package lambdaauth

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Config configures the token and authorizer functions.
type Config struct {
	TokenSecretARN, AuthTable, PublicBaseURL string
}

// Load reads the token function's (table set) or the authorizer's
// configuration, reporting every problem at once.
func Load(getenv func(string) string, needTable bool) (Config, error) {
	c := Config{
		TokenSecretARN: strings.TrimSpace(getenv(settings.EnvTokenSecretARN)),
		AuthTable:      strings.TrimSpace(getenv(settings.EnvAuthTable)),
		PublicBaseURL:  strings.TrimSuffix(getenv(settings.EnvPublicBaseURL), "/"),
	}
	var problems []string
	if c.TokenSecretARN == "" {
		problems = append(problems, settings.EnvTokenSecretARN+" is not set")
	}
	if needTable && c.AuthTable == "" {
		problems = append(problems, settings.EnvAuthTable+" is not set")
	}
	if len(problems) > 0 {
		return c, fmt.Errorf("configuration: %s", strings.Join(problems, "; "))
	}
	return c, nil
}

// TokenKeys reads the access token secret once per container.
func TokenKeys(ctx context.Context, awsCfg aws.Config, arn string) (*smartauth.Keys, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := secretsmanager.NewFromConfig(awsCfg).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	if err != nil {
		return nil, fmt.Errorf("read the access token secret %s: %w", arn, err)
	}
	if out.SecretString == nil {
		return nil, fmt.Errorf("the access token secret %s has no SecretString", arn)
	}
	return smartauth.NewHMACKeys([]byte(*out.SecretString))
}

// Store holds the registered clients and the used assertion ids (the
// token function's is dynamoauth.Store on the auth table).
type Store interface {
	smartauth.ClientStore
	smartauth.ReplayCache
}

// TokenServer is the token function's handler: the token endpoint and
// the discovery document over store.
func TokenServer(c Config, keys *smartauth.Keys, store Store, log *slog.Logger) http.Handler {
	return &smartauth.Server{
		Clients: store, Replay: store, Keys: keys, JWKS: &smartauth.JWKSFetcher{},
		BaseURL: c.PublicBaseURL, BasePath: "/fhir", Log: log,
	}
}

// MustSetup configures the token function (needTable) or the
// authorizer at cold start, or logs every problem and exits.
func MustSetup(needTable bool) (Config, aws.Config, *smartauth.Keys) {
	log := lambdacontext.NewLogger()
	c, err := Load(os.Getenv, needTable)
	exit(log, "startup", err)
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	exit(log, "startup: AWS config", err)
	keys, err := TokenKeys(context.Background(), awsCfg, c.TokenSecretARN)
	exit(log, "startup", err)
	return c, awsCfg, keys
}

// exit logs a cold-start failure and exits (Lambda reports the init
// failure); nil does nothing.
func exit(log *slog.Logger, msg string, err error) {
	if err != nil {
		log.Error(msg, "err", err)
		os.Exit(1)
	}
}

// APIKeys are the keys the API functions verify bulkfhir's own tokens
// with: read from the secret arn in mode bulkfhir, none otherwise.
func APIKeys(ctx context.Context, awsCfg aws.Config, mode, arn string) (*smartauth.Keys, error) {
	if mode != settings.AuthBulkfhir {
		return nil, nil
	}
	return TokenKeys(ctx, awsCfg, arn)
}
