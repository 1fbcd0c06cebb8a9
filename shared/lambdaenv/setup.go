package lambdaenv

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/joblog"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

// Env is a function's loaded configuration, AWS configuration and logger.
type Env struct {
	Config Config
	AWS    aws.Config
	Log    *slog.Logger
}

// MustLoad configures a function at cold start: the Lambda logger, the
// configuration and config.LoadDefaultConfig, once per container. It logs
// every problem and exits (Lambda reports the init failure).
func MustLoad(role Role) *Env {
	// Every line written during a job's step carries its "job" field.
	log := slog.New(joblog.NewHandler(lambdacontext.NewLogger().Handler()))
	cfg, err := Load(os.Getenv, role)
	Exit(log, "startup", err)
	awsCfg, err := config.LoadDefaultConfig(context.Background())
	Exit(log, "startup: AWS config", err)
	return &Env{Config: cfg, AWS: awsCfg, Log: log}
}

// Must exits at cold start if err is set (see Exit).
func (e *Env) Must(msg string, err error) { Exit(e.Log, msg, err) }

// Exit logs a cold-start failure and exits (Lambda reports the init
// failure); nil does nothing.
func Exit(log *slog.Logger, msg string, err error) {
	if err != nil {
		log.Error(msg, "err", err)
		os.Exit(1)
	}
}

// S3 is the S3 client of the files and of a source bucket.
func S3(awsCfg aws.Config) *s3.Client {
	return s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		// Ranged reads of source objects carry no whole-object checksum;
		// the SDK would log that on every read.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
}

// Jobs is the job store on the configured DynamoDB table.
func Jobs(cfg Config, awsCfg aws.Config, dynamoOpts ...func(*dynamodb.Options)) *dynamostore.Store {
	return dynamostore.New(dynamodb.NewFromConfig(awsCfg, dynamoOpts...), cfg.Table, cfg.MaxJobDuration+cfg.Retention)
}

// Files is the file store in the configured bucket, NDJSON stored
// gzip-compressed (gzfile).
func Files(cfg Config, s3c *s3.Client) *s3store.Store {
	return s3store.New(s3c, s3store.Options{Bucket: cfg.Bucket, Prefix: cfg.BucketPrefix, Compress: true})
}
