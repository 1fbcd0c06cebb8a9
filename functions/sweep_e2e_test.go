package functions_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/retention"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

// TestRetentionSweepOnAWS: the sweep function deletes a completed job's
// files and records once its Expires has passed, not a second before;
// never a live job's; and files whose job record is gone.
func TestRetentionSweepOnAWS(t *testing.T) {
	cl := need(t)
	ctx := context.Background()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	noChecksum := func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true }
	db := dynamodb.NewFromConfig(cl.awsCfg, noChecksum)
	store := dynamostore.New(db, table, time.Hour)
	put := func(key string) {
		t.Helper()
		if _, err := cl.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(cl.exportPx + key), Body: bytes.NewReader([]byte("{}\n"))}); err != nil {
			t.Fatal(err)
		}
	}
	objects := func(job string) int {
		t.Helper()
		out, err := cl.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(cl.exportPx + job + "/")})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Contents)
	}
	records := func(job string) int {
		t.Helper()
		out, err := db.Query(ctx, &dynamodb.QueryInput{TableName: aws.String(table), KeyConditionExpression: aws.String("pk = :pk"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":pk": &types.AttributeValueMemberS{Value: "JOB#" + job}}})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Items)
	}

	// A: a completed export (2 h retention).
	done := kickoff(t, http.MethodGet, "/fhir/$export", "_type=Patient", "")
	completed(t, done)
	job, err := store.Get(ctx, done)
	if err != nil {
		t.Fatal(err)
	}
	// B: a live job with a file written, expiring (as a record) long ago.
	live := export.NewJobID()
	now := time.Now().UTC()
	if err := store.Create(ctx, &export.Job{ID: live, Owner: "someone", Status: export.StatusInProgress, Request: bulkdata.Request{Level: bulkdata.LevelSystem},
		CreatedAt: now, UpdatedAt: now, TransactionTime: now, ExpiresAt: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	put(live + "/Patient.0000/Patient.0000.ndjson")
	// C: files whose record is gone.
	orphan := export.NewJobID()
	put(orphan + "/Patient.0000/Patient.0000.ndjson")
	// Not a job's folder: left alone.
	put("mapruns/abc/manifest.json")

	cfg, err := lambdaenv.LoadSweep(func(k string) string { return cl.env[k] })
	if err != nil {
		t.Fatal(err)
	}
	// The function as deployed, now: only the orphan goes.
	res, err := lambdaenv.SweepHandler(cfg, cl.awsCfg, log, noChecksum)(ctx, events.EventBridgeEvent{DetailType: "Scheduled Event"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Orphans < 1 || objects(orphan) != 0 {
		t.Errorf("sweep %+v: orphan has %d objects left", res, objects(orphan))
	}
	if objects(done) == 0 || records(done) == 0 || objects(live) != 1 || records(live) != 1 {
		t.Fatalf("sweep before Expires deleted: done %d objects %d records, live %d/%d", objects(done), records(done), objects(live), records(live))
	}
	if r := apiRequest(t, http.MethodGet, "/fhir/bulkstatus/"+done, "", "", ""); r.StatusCode != 200 {
		t.Fatalf("status before Expires = %d", r.StatusCode)
	}

	// The same stores at the job's Expires and a second after it.
	jobs := dynamostore.New(db, table, 0).WithDeleter(db)
	files := s3store.New(cl.s3, s3store.Options{Bucket: bucket, Prefix: cl.exportPx})
	if _, err := retention.Sweep(ctx, jobs, files, job.ExpiresAt, log); err != nil {
		t.Fatal(err)
	}
	if objects(done) == 0 || records(done) == 0 {
		t.Fatal("deleted at Expires, not after it")
	}
	if res, err = retention.Sweep(ctx, jobs, files, job.ExpiresAt.Add(time.Second), log); err != nil || res.Expired < 1 {
		t.Fatalf("sweep after Expires: %+v %v", res, err)
	}
	if objects(done) != 0 || records(done) != 0 {
		t.Errorf("after Expires: %d objects, %d records left", objects(done), records(done))
	}
	if _, err := store.Get(ctx, done); !errors.Is(err, export.ErrJobNotFound) {
		t.Errorf("job after the sweep: %v", err)
	}
	if objects(live) != 1 || records(live) != 1 {
		t.Errorf("the live job lost its files or record: %d, %d", objects(live), records(live))
	}
	if objects("mapruns") == 0 {
		t.Error("the sweep deleted what is not a job's")
	}
	// A conditional delete keeps a live job even if asked directly.
	if gone, err := jobs.DeleteExpired(ctx, live, now.Add(48*time.Hour)); err != nil || gone {
		t.Errorf("DeleteExpired(live) = %v %v", gone, err)
	}
}
