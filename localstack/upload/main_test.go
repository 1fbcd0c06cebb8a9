package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
)

var startErr error

func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "S3")) }

func TestUploadsEveryNDJSONFile(t *testing.T) {
	awstest.Handle(t, startErr)
	ctx := context.Background()
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": awstest.AccessKey, "AWS_SECRET_ACCESS_KEY": awstest.SecretKey, "AWS_REGION": awstest.Region} {
		t.Setenv(k, v)
	}
	cfg, _ := awstest.Config(ctx)
	client := s3.NewFromConfig(cfg)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("src")}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Patient.ndjson"), []byte(`{"resourceType":"Patient","id":"1"}`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "Observation.ndjson"), []byte(`{"resourceType":"Observation","id":"o"}`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not data"), 0o644)
	if err := run(ctx, "src", "fhir/", dir); err != nil {
		t.Fatal(err)
	}
	out, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("src")})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, *o.Key)
	}
	if len(keys) != 2 || keys[0] != "fhir/Observation.ndjson" || keys[1] != "fhir/Patient.ndjson" {
		t.Errorf("keys = %v", keys)
	}
	if err := run(ctx, "src", "", t.TempDir()); err == nil {
		t.Error("an empty directory uploaded nothing without an error")
	}
}
