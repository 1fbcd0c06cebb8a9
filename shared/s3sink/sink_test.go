package s3sink_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/s3sink"
)

var startErr error

func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "S3")) }

// TestSinkOnMinIO: a file bigger than a part is a multipart upload that
// appears only on Commit; a file aborted after a cancelled context leaves
// neither an object nor an unfinished multipart upload; Open of an absent
// name is fs.ErrNotExist; List and Remove work under the prefix only.
func TestSinkOnMinIO(t *testing.T) {
	awstest.Handle(t, startErr)
	ctx := context.Background()
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg)
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("sink")}); err != nil {
		t.Fatal(err)
	}
	sink, err := s3sink.New(client, "s3://sink/run", 5<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := sink.Location(); got != "s3://sink/run/" {
		t.Errorf("Location = %q", got)
	}
	line := []byte(`{"resourceType":"Observation","id":"x","note":"` + strings.Repeat("a", 980) + `"}` + "\n")
	var want bytes.Buffer
	f, err := sink.Create(ctx, "Observation.1.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	for want.Len() < 12<<20 {
		f.Write(line)
		want.Write(line)
	}
	if _, err := sink.Open(ctx, "Observation.1.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the object is visible before Commit: %v", err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("sink"), Key: aws.String("run/Observation.1.ndjson")})
	if err != nil {
		t.Fatal(err)
	}
	if etag := aws.ToString(head.ETag); !strings.HasSuffix(strings.Trim(etag, `"`), "-3") {
		t.Errorf("ETag %s: want a multipart upload of 3 parts", etag)
	}
	r, err := sink.Open(ctx, "Observation.1.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("read back %d bytes, want %d", len(got), want.Len())
	}

	// An interrupted file: the caller's context is cancelled, then Abort.
	cctx, cancel := context.WithCancel(ctx)
	f, err = sink.Create(cctx, "Patient.1.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6<<10; i++ {
		f.Write(line)
	}
	cancel()
	f.Abort()
	if _, err := sink.Open(ctx, "Patient.1.ndjson"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("an aborted file is visible: %v", err)
	}
	ups, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("sink")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads left unfinished", len(ups.Uploads))
	}

	names, err := sink.List(ctx)
	if err != nil || len(names) != 1 || names[0] != "Observation.1.ndjson" {
		t.Errorf("List = %v, %v", names, err)
	}
	if err := sink.Remove(ctx, "Observation.1.ndjson"); err != nil {
		t.Fatal(err)
	}
	if names, _ := sink.List(ctx); len(names) != 0 {
		t.Errorf("after Remove, List = %v", names)
	}
}
