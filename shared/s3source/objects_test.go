package s3source_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
	"github.com/bulkfhir/bulkfhir/shared/s3source"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
	"github.com/bulkfhir/bulkfhir/shared/typefilter/typefiltertest"
)

var startErr error

func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "S3")) }

// readAll exports every type of q through a source and returns the lines.
func readAll(t *testing.T, src export.Source, q export.Query) []string {
	t.Helper()
	types, err := src.Types(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, typ := range types {
		for _, line := range exporttest.ReadType(t, src, q, typ) {
			out = append(out, string(line))
		}
	}
	sort.Strings(out)
	return out
}

func TestS3SourceMatchesDirectorySource(t *testing.T) {
	awstest.Handle(t, startErr)
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := sampledata.Generate(dir, sampledata.Options{Patients: 15, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("source")}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("source"), Key: aws.String("fhir/" + filepath.Base(f)), Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	local, err := ndjsonsource.New(dir, 20000)
	if err != nil {
		t.Fatal(err)
	}
	remote := s3source.New(client, "source", "fhir/", 20000)
	for _, q := range []export.Query{
		{Level: bulkdata.LevelSystem},
		{Level: bulkdata.LevelGroup, GroupID: "even-cohort"},
	} {
		want, got := readAll(t, local, q), readAll(t, remote, q)
		if len(want) == 0 || len(got) != len(want) {
			t.Fatalf("%s: S3 source read %d resources, directory source %d", q.Level, len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: resource %d differs", q.Level, i)
			}
		}
	}
	segs, _ := remote.Plan(ctx, export.Query{}, "Observation")
	if len(segs) < 5 {
		t.Errorf("Observation planned as %d segments, want ranged segments", len(segs))
	}
}

func TestS3SourceTypeFilterCases(t *testing.T) {
	awstest.Handle(t, startErr)
	ctx := context.Background()
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("filtered")}); err != nil {
		t.Fatal(err)
	}
	// One object per type, typed by its name (no index scan), as in a
	// deployed source bucket.
	for typ, body := range typefiltertest.ByType() {
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("filtered"), Key: aws.String("fhir/" + typ + ".ndjson"), Body: bytes.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	typefiltertest.RunSource(t, s3source.New(client, "filtered", "fhir/", 0))
}

// TestReplacedObjectIsDetected: a segment planned on one version of an
// object is not read from another; the GET is pinned with If-Match.
func TestReplacedObjectIsDetected(t *testing.T) {
	awstest.Handle(t, startErr)
	ctx := context.Background()
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("changing")}); err != nil {
		t.Fatal(err)
	}
	put := func(body string) {
		t.Helper()
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("changing"), Key: aws.String("fhir/Patient.ndjson"), Body: bytes.NewReader([]byte(body))}); err != nil {
			t.Fatal(err)
		}
	}
	put(`{"resourceType":"Patient","id":"a"}` + "\n" + `{"resourceType":"Patient","id":"b"}` + "\n")
	src := s3source.New(client, "changing", "fhir/", 0)
	q := export.Query{Level: bulkdata.LevelSystem}
	segs, err := src.Plan(ctx, q, "Patient")
	if err != nil || len(segs) != 1 {
		t.Fatalf("plan = %v, %v", segs, err)
	}
	// Unchanged: the pinned read works (the negative control).
	r, err := src.Open(ctx, q, "Patient", segs[0], "")
	if err != nil {
		t.Fatalf("open unchanged: %v", err)
	}
	r.Close()
	put(`{"resourceType":"Patient","id":"c"}` + "\n" + `{"resourceType":"Patient","id":"d"}` + "\n") // same size, other content
	_, err = src.Open(ctx, q, "Patient", segs[0], "")
	var changed *export.SourceChangedError
	if !errors.As(err, &changed) || changed.Object != "Patient.ndjson" {
		t.Fatalf("open after the object was replaced = %v, want a SourceChangedError naming Patient.ndjson", err)
	}
}
