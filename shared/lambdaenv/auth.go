package lambdaenv

import (
	"context"
	"fmt"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/bulkfhir/bulkfhir/shared/dynamoauth"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// loadAuth reads the API functions' authorization settings.
func loadAuth(getenv func(string) string, c *Config, problems *[]string) {
	c.Auth = strings.TrimSpace(getenv(settings.EnvAuth))
	if c.Auth == "" {
		c.Auth = settings.AuthBulkfhir
	}
	c.TokenSecretARN = strings.TrimSpace(getenv(settings.EnvTokenSecretARN))
	c.TokenURL = strings.TrimSpace(getenv(settings.EnvTokenURL))
	switch c.Auth {
	case settings.AuthBulkfhir:
		if c.TokenSecretARN == "" {
			*problems = append(*problems, settings.EnvTokenSecretARN+" is not set (the access token key; or set "+settings.EnvAuth+"=gateway or none)")
		}
	case settings.AuthGateway, settings.AuthNone:
	default:
		*problems = append(*problems, fmt.Sprintf("%s=%q: want bulkfhir, gateway or none", settings.EnvAuth, c.Auth))
	}
}

// AuthConfig configures the token and authorizer functions.
type AuthConfig struct {
	TokenSecretARN, AuthTable, PublicBaseURL string
}

// LoadAuth reads the token function's (table set) or the authorizer's
// configuration, reporting every problem at once.
func LoadAuth(getenv func(string) string, needTable bool) (AuthConfig, error) {
	c := AuthConfig{
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

// TokenServer is the token function's handler: the token endpoint and
// the discovery document over the DynamoDB auth table.
func TokenServer(c AuthConfig, keys *smartauth.Keys, db dynamoauth.API, log *slog.Logger) http.Handler {
	store := dynamoauth.New(db, c.AuthTable)
	return &smartauth.Server{
		Clients: store, Replay: store, Keys: keys, JWKS: &smartauth.JWKSFetcher{},
		BaseURL: c.PublicBaseURL, BasePath: "/fhir", Log: log,
	}
}

// MustSetupAuth configures the token function (needTable) or the
// authorizer at cold start, or logs every problem and exits.
func MustSetupAuth(needTable bool) (AuthConfig, aws.Config, *smartauth.Keys) {
	log := lambdacontext.NewLogger()
	c, err := LoadAuth(os.Getenv, needTable)
	exitOnError(log, "startup", err)
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	exitOnError(log, "startup: AWS config", err)
	keys, err := TokenKeys(context.Background(), awsCfg, c.TokenSecretARN)
	exitOnError(log, "startup", err)
	return c, awsCfg, keys
}

var _ dynamoauth.API = (*dynamodb.Client)(nil)
