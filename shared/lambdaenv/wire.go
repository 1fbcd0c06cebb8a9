package lambdaenv

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/awslabs/aws-lambda-go-api-proxy/core"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirsource"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
	"github.com/bulkfhir/bulkfhir/shared/s3source"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
	"github.com/bulkfhir/bulkfhir/shared/sfnrunner"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Deps are the adapters a function runs on.
type Deps struct {
	Jobs   *dynamostore.Store
	Files  *s3store.Store
	Source export.Source
	Steps  *export.Steps
	// Keys verify bulkfhir's access tokens (API functions, Auth bulkfhir).
	Keys *smartauth.Keys
}

// Build creates the clients and adapters from cfg. awsCfg comes from
// config.LoadDefaultConfig, called once per container.
func Build(cfg Config, awsCfg aws.Config, log *slog.Logger, dynamoOpts ...func(*dynamodb.Options)) (*Deps, error) {
	s3c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Ranged reads of source objects carry no whole-object checksum;
		// the SDK would log that on every read.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	d := &Deps{
		Jobs:  dynamostore.New(dynamodb.NewFromConfig(awsCfg, dynamoOpts...), cfg.Table, cfg.MaxJobDuration+cfg.Retention),
		Files: s3store.New(s3c, s3store.Options{Bucket: cfg.Bucket, Prefix: cfg.BucketPrefix, Compress: true}),
	}
	signLinks(d.Files, cfg.Downloads, awsCfg)
	switch {
	case cfg.StatusOnly:
		d.Source = noSource{}
	case cfg.SourceURL != "":
		src, err := upstream(cfg, awsCfg, log)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		d.Source = src
	case cfg.SourceBucket != "":
		d.Source = s3source.New(s3c, cfg.SourceBucket, cfg.SourcePrefix, 0)
	default:
		src, err := ndjsonsource.New(cfg.SourceDir, 0)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		d.Source = src
	}
	d.Steps = export.NewSteps(d.Jobs, d.Files, d.Source, cfg.Export(), log)
	if cfg.Auth == AuthBulkfhir {
		keys, err := TokenKeys(context.Background(), awsCfg, cfg.TokenSecretARN)
		if err != nil {
			return nil, err
		}
		d.Keys = keys
	}
	return d, nil
}

// upstream builds the FHIR REST source, reading its credentials from
// Secrets Manager once per container.
func upstream(cfg Config, awsCfg aws.Config, log *slog.Logger) (*fhirsource.Source, error) {
	st := fhirsource.Settings{
		URL: cfg.SourceURL, ClientID: cfg.SourceClientID, TokenURL: cfg.SourceTokenURL,
		Scope: cfg.SourceScope, SigV4Region: cfg.SigV4Reg,
	}
	if cfg.SourceSecretARN != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := secretsmanager.NewFromConfig(awsCfg).GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{
			SecretId: aws.String(cfg.SourceSecretARN),
		})
		if err != nil {
			return nil, fmt.Errorf("read the upstream secret %s: %w", cfg.SourceSecretARN, err)
		}
		if out.SecretString == nil {
			return nil, fmt.Errorf("the upstream secret %s has no SecretString", cfg.SourceSecretARN)
		}
		if err := st.ApplySecret([]byte(*out.SecretString)); err != nil {
			return nil, err
		}
	}
	auth, err := st.Authorizer(awsCfg.Credentials)
	if err != nil {
		return nil, err
	}
	return fhirsource.New(fhirsource.Options{BaseURL: st.URL, Auth: auth, Log: log})
}

// Handler is the HTTP API as served behind API Gateway: the Step Functions
// runner, presigned links, the caller from the JWT authorizer, and API
// Gateway's request id as the kick-off idempotency key.
func (d *Deps) Handler(cfg Config, awsCfg aws.Config, log *slog.Logger) http.Handler {
	runner := sfnrunner.New(sfn.NewFromConfig(awsCfg), cfg.StateMachineARN)
	var files export.FileStore = d.Files
	var deliver api.FileDeliverer
	if cfg.Downloads.Mode == api.DownloadsRedirect {
		files = api.RedirectLinks(d.Files)
		if cfg.StatusOnly {
			// The download route is the status function's (its role may
			// read the export prefix and assume the download signer).
			deliver = d.Files
		}
	}
	svc := export.NewService(d.Jobs, files, runner, d.Source, cfg.Export(), log)
	h := api.New(svc, api.Config{
		BaseURL:   cfg.PublicBaseURL,
		Auth:      d.authenticator(cfg),
		TokenURL:  tokenURL(cfg),
		RequestID: RequestID,
		Deliver:   deliver,
		Log:       log,
	})
	if cfg.StatusOnly {
		return statusOnly(h)
	}
	return h
}

// RequestID is API Gateway's id of the request (stable across a retried
// invocation of the same request).
func RequestID(r *http.Request) string {
	if rc, ok := core.GetAPIGatewayV2ContextFromContext(r.Context()); ok {
		return rc.RequestID
	}
	if rc, ok := requestContextV1(r); ok {
		return rc.RequestID
	}
	return ""
}

// GatewayAuth takes the caller from API Gateway's JWT authorizer (an
// outside issuer): the client_id claim (SMART Backend Services), else sub,
// and the scope claim, enforced as for bulkfhir's own tokens (a token with
// no usable system read scope may read nothing). Without an authorizer
// every caller is the anonymous client, as in the embedded server.
type GatewayAuth struct{}

// Authenticate implements api.Authenticator.
func (GatewayAuth) Authenticate(r *http.Request) (api.Caller, error) {
	rc, ok := core.GetAPIGatewayV2ContextFromContext(r.Context())
	if !ok || rc.Authorizer == nil || rc.Authorizer.JWT == nil {
		return api.Caller{Client: api.AnonymousClient}, nil
	}
	claims := rc.Authorizer.JWT.Claims
	scopes := smartauth.ReadScopes(claims["scope"])
	for _, k := range []string{"client_id", "sub"} {
		if v := claims[k]; v != "" {
			return api.Caller{Client: v, Scopes: scopes}, nil
		}
	}
	return api.Caller{}, fmt.Errorf("the token names no client")
}
