package s3source_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
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
	return exporttest.ReadAllTypes(t, src, q)
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

// TestS3PatientIndex: on S3 the patient index lives in another bucket
// (the export bucket on AWS); a 5-patient batch then reads its ranges with
// ranged GETs, in a new process too, and exports what a whole-object read
// exports.
func TestS3PatientIndex(t *testing.T) {
	awstest.Handle(t, startErr)
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := sampledata.Generate(dir, sampledata.Options{Patients: 100, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) { o.DisableLogOutputChecksumValidationSkipped = true })
	for _, b := range []string{"indexed-source", "indexed-exports"} {
		if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	var total int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		total += int64(len(b))
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("indexed-source"), Key: aws.String("fhir/" + filepath.Base(f)), Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	local, err := ndjsonsource.New(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	members, err := local.GroupMembers(ctx, "small-cohort")
	if err != nil || len(members) != 5 {
		t.Fatalf("members = %v, %v", members, err)
	}
	q := export.Query{Level: bulkdata.LevelPatient, Patients: members}
	want := readAll(t, local, q)
	index := s3source.IndexStore{API: client, Bucket: "indexed-exports", Prefix: "patient-index/"}
	first := s3source.NewIndexed(client, "indexed-source", "fhir/", 0, index)
	if got := readAll(t, first, q); !slices.Equal(got, want) || len(want) == 0 {
		t.Fatalf("first (index-building) export: %d resources, directory source %d", len(got), len(want))
	}
	listed, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("indexed-exports"), Prefix: aws.String("patient-index/")})
	if err != nil || len(listed.Contents) == 0 {
		t.Fatalf("no index objects under patient-index/: %v", err)
	}
	second := s3source.NewIndexed(client, "indexed-source", "fhir/", 0, index)
	if got := readAll(t, second, q); !slices.Equal(got, want) {
		t.Fatalf("indexed export in a new process: %d resources, directory source %d", len(got), len(want))
	}
	if read := second.BytesRead(); read*100 >= total*10 {
		t.Errorf("the indexed export read %d of %d source bytes, want under 10 %%", read, total)
	}
	// Without the index (the negative control) the same export reads all.
	plain := s3source.New(client, "indexed-source", "fhir/", 0)
	readAll(t, plain, q)
	if read := plain.BytesRead(); read < total/2 {
		t.Errorf("the unindexed export read only %d of %d bytes", read, total)
	}
}
