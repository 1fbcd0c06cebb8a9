package s3store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

var startErr error

func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "S3")) }

func newStore(t *testing.T, bucket string) (*s3store.Store, *s3.Client) {
	t.Helper()
	awstest.Handle(t, startErr)
	cfg, err := awstest.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	client := s3.NewFromConfig(cfg)
	if _, err := client.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatal(err)
	}
	return s3store.New(client, s3store.Options{Bucket: bucket, Prefix: "exports/", PartSize: 5 << 20, Compress: true}), client
}

func get(t *testing.T, u string) (int, []byte, http.Header) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

func TestStreamedUploadsAndPresignedLinks(t *testing.T) {
	store, client := newStore(t, "links")
	ctx := context.Background()
	// 20 MiB of lines that compress to about three quarters (random
	// base64): three or more parts of 5 MiB, written in small pieces.
	var want bytes.Buffer
	w, err := store.Create(ctx, "job1/Observation.0000/Observation.0000.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 735)
	for want.Len() < 20<<20 {
		rand.Read(rnd)
		line := []byte(`{"resourceType":"Observation","id":"x","note":"` + base64.StdEncoding.EncodeToString(rnd) + `"}` + "\n")
		w.Write(line)
		want.Write(line)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("links"), Key: aws.String("exports/job1/Observation.0000/Observation.0000.ndjson")})
	if err != nil {
		t.Fatal(err)
	}
	if _, parts, _ := strings.Cut(strings.Trim(aws.ToString(head.ETag), `"`), "-"); parts < "3" || len(parts) != 1 {
		t.Errorf("ETag %s: want a multipart upload of 3 to 9 parts", aws.ToString(head.ETag))
	}
	if aws.ToString(head.ContentEncoding) != "gzip" || aws.ToInt64(head.ContentLength) >= int64(want.Len()) {
		t.Errorf("stored %d bytes with Content-Encoding %q, want gzip and fewer than %d", aws.ToInt64(head.ContentLength), aws.ToString(head.ContentEncoding), want.Len())
	}

	expires := time.Now().Add(3 * time.Hour)
	link, err := store.URL(ctx, "job1/Observation.0000/Observation.0000.ndjson", expires)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(link)
	if secs, _ := strconv.Atoi(u.Query().Get("X-Amz-Expires")); secs <= 0 || time.Duration(secs)*time.Second > time.Until(expires)+time.Second {
		t.Errorf("link valid for %ds, longer than the job (%s)", secs, time.Until(expires))
	}
	code, body, hdr := get(t, link)
	if code != 200 || !bytes.Equal(body, want.Bytes()) {
		t.Fatalf("presigned GET = %d, %d bytes (want %d)", code, len(body), want.Len())
	}
	if ct := hdr.Get("Content-Type"); ct != "application/fhir+ndjson" {
		t.Errorf("Content-Type = %q", ct)
	}
	q := u.Query()
	q.Set("X-Amz-Signature", strings.Repeat("0", 64))
	u.RawQuery = q.Encode()
	if code, _, _ := get(t, u.String()); code != 403 {
		t.Errorf("tampered link = %d, want 403", code)
	}
	short, _ := store.URL(ctx, "job1/Observation.0000/Observation.0000.ndjson", time.Now().Add(1500*time.Millisecond))
	time.Sleep(2500 * time.Millisecond)
	if code, _, _ := get(t, short); code != 403 {
		t.Errorf("expired link = %d, want 403", code)
	}
	if _, err := store.URL(ctx, "job1/x", time.Now().Add(-time.Second)); err == nil {
		t.Error("made a link that is already expired")
	}
}

func TestAbortAndDeleteJob(t *testing.T) {
	store, client := newStore(t, "cleanup")
	ctx := context.Background()
	for _, job := range []string{"jobA", "jobB"} {
		for i := 0; i < 3; i++ {
			w, _ := store.Create(ctx, fmt.Sprintf("%s/u/P.%04d.ndjson", job, i))
			w.Write([]byte(`{"resourceType":"Patient"}` + "\n"))
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
		}
	}
	w, _ := store.Create(ctx, "jobA/u/aborted.ndjson")
	w.Write([]byte("partial"))
	w.Abort()
	if err := store.DeleteJob(ctx, "jobA"); err != nil {
		t.Fatal(err)
	}
	list := func(prefix string) int {
		out, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("cleanup"), Prefix: aws.String(prefix)})
		if err != nil {
			t.Fatal(err)
		}
		return len(out.Contents)
	}
	if n := list("exports/jobA/"); n != 0 {
		t.Errorf("%d objects of jobA left (the aborted one must never appear)", n)
	}
	if n := list("exports/jobB/"); n != 3 {
		t.Errorf("jobB has %d objects, want 3", n)
	}
}
