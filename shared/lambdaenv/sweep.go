package lambdaenv

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/retention"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// SweepConfig configures the retention sweep function.
type SweepConfig struct {
	Table, Bucket, BucketPrefix string
}

// LoadSweep reads the sweep function's configuration, reporting every
// missing variable at once.
func LoadSweep(getenv func(string) string) (SweepConfig, error) {
	c := SweepConfig{Table: strings.TrimSpace(getenv(settings.EnvTable)), Bucket: strings.TrimSpace(getenv(settings.EnvBucket)), BucketPrefix: getenv(settings.EnvBucketPrefix)}
	var problems []string
	if c.Table == "" {
		problems = append(problems, settings.EnvTable+" is not set")
	}
	if c.Bucket == "" {
		problems = append(problems, settings.EnvBucket+" is not set")
	}
	if c.BucketPrefix == "" {
		c.BucketPrefix = "exports/"
	}
	if len(problems) > 0 {
		return c, errors.New("configuration: " + strings.Join(problems, "; "))
	}
	return c, nil
}

// SweepHandler is the sweep function's handler, run by an EventBridge
// schedule: retention.Sweep over the export bucket and the jobs table.
func SweepHandler(c SweepConfig, awsCfg aws.Config, log *slog.Logger, dynamoOpts ...func(*dynamodb.Options)) func(context.Context, events.EventBridgeEvent) (retention.Result, error) {
	db := dynamodb.NewFromConfig(awsCfg, dynamoOpts...)
	jobs := dynamostore.New(db, c.Table, 0).WithDeleter(db)
	files := s3store.New(s3.NewFromConfig(awsCfg), s3store.Options{Bucket: c.Bucket, Prefix: c.BucketPrefix})
	return func(ctx context.Context, _ events.EventBridgeEvent) (retention.Result, error) {
		res, err := retention.Sweep(ctx, jobs, files, time.Now(), log)
		log.InfoContext(ctx, "sweep", "checked", res.Checked, "expired", res.Expired, "orphans", res.Orphans, "failed", res.Failed)
		return res, err
	}
}
