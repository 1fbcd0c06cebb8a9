// Package lambdasource builds the export source a Lambda function reads
// (a FHIR server, NDJSON objects in S3 or a directory) from its
// configuration. Only the functions that read the source (kickoff, plan,
// export) import it, so the others do not link the source adapters.
package lambdasource

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhirsource"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
	"github.com/bulkfhir/bulkfhir/shared/s3source"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// New builds the configured source; s3c reads a source bucket.
func New(cfg lambdaenv.Config, awsCfg aws.Config, s3c *s3.Client, log *slog.Logger) (export.Source, error) {
	switch {
	case cfg.StatusOnly:
		return lambdaenv.NoSource{}, nil
	case cfg.SourceURL != "":
		src, err := upstream(cfg, awsCfg, log)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		return src, nil
	case cfg.SourceBucket != "":
		// Patient indexes go in the export bucket, beside the jobs.
		index := s3source.IndexStore{API: s3c, Bucket: cfg.Bucket, Prefix: settings.PatientIndexPrefix}
		return s3source.NewIndexed(s3c, cfg.SourceBucket, cfg.SourcePrefix, 0, index), nil
	}
	src, err := ndjsonsource.New(cfg.SourceDir, 0)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return src, nil
}

// upstream builds the FHIR REST source, reading its credentials from
// Secrets Manager once per container.
func upstream(cfg lambdaenv.Config, awsCfg aws.Config, log *slog.Logger) (*fhirsource.Source, error) {
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
