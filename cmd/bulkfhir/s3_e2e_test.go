package main

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
)

// TestExportToS3 exports with --out s3://bucket/prefix into MinIO, checks
// the objects against the source, verifies the prefix with bulkfhir verify,
// and resumes after an object was lost: only that file is uploaded again.
func TestExportToS3(t *testing.T) {
	e, err := awstest.StartMinIO()
	awstest.Handle(t, err)
	t.Cleanup(e.Stop)
	env := append(os.Environ(), "BULKFHIR_TOKEN=", "AWS_ENDPOINT_URL_S3="+e.Endpoint,
		"AWS_ACCESS_KEY_ID="+awstest.AccessKey, "AWS_SECRET_ACCESS_KEY="+awstest.SecretKey, "AWS_REGION="+awstest.Region)
	ctx := context.Background()
	t.Setenv("AWS_ENDPOINT_URL_S3", e.Endpoint)
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("exports")}); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, dataDir, "--max-file-bytes", "200000")
	dest := "s3://exports/nightly/run-1/"
	bulkfhir := func(args ...string) (string, int) {
		cmd := exec.Command(binPath, args...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(b), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(b), 0
	}
	if out, code := bulkfhir("export", "--server", s.base, "--out", dest); code != 0 {
		t.Fatalf("export to S3: status %d\n%s", code, out)
	}
	// The objects, read back with the SDK, are the source.
	var keys []string
	p := s3.NewListObjectsV2Paginator(client, &s3.ListObjectsV2Input{Bucket: aws.String("exports"), Prefix: aws.String("nightly/run-1/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	dir := t.TempDir()
	for _, k := range keys {
		name := strings.TrimPrefix(k, "nightly/run-1/")
		if !strings.HasSuffix(name, ".ndjson") || strings.Contains(name, "/") {
			continue
		}
		obj, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("exports"), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		f, _ := os.Create(dir + "/" + name)
		f.ReadFrom(obj.Body)
		f.Close()
		obj.Body.Close()
	}
	sameSet(t, sourceResources(t, dir), sourceResources(t, dataDir))
	for _, want := range []string{"nightly/run-1/manifest.json", "nightly/run-1/.bulkfhir-export.json", "nightly/run-1/Observation.2.ndjson"} {
		if !slices.Contains(keys, want) {
			t.Errorf("no object %s among %v", want, keys)
		}
	}
	if out, code := bulkfhir("verify", "--out", dest, "--data", dataDir); code != 0 {
		t.Errorf("verify of the S3 prefix: status %d\n%s", code, out)
	}

	// Refused without --resume or --force, like a folder.
	if out, code := bulkfhir("export", "--server", s.base, "--out", dest); code != 2 {
		t.Errorf("a second export into the prefix: status %d, want 2\n%s", code, out)
	}
	// A lost object is uploaded again on --resume; the others are kept.
	if _, err := client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("exports"), Key: aws.String("nightly/run-1/Observation.2.ndjson")}); err != nil {
		t.Fatal(err)
	}
	out, code := bulkfhir("export", "--server", s.base, "--out", dest, "--resume", "--output", "json")
	if code != 0 {
		t.Fatalf("resume: status %d\n%s", code, out)
	}
	files := 0
	for _, k := range keys {
		if strings.HasSuffix(k, ".ndjson") {
			files++
		}
	}
	if !strings.Contains(out, `"keptFiles": `+strconv.Itoa(files-1)) {
		t.Errorf("resume did not keep the %d complete objects:\n%s", files-1, out)
	}
	if out, code := bulkfhir("verify", "--out", dest, "--data", dataDir); code != 0 {
		t.Errorf("verify after resume: status %d\n%s", code, out)
	}
}
