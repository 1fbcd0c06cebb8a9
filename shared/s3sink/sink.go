// Package s3sink is the bulkclient.Sink on S3, for `bulkfhir export --out
// s3://bucket/prefix`. Each file streams through the SDK's upload manager
// (package s3store's writer: multipart, PartSize × Concurrency of memory per
// file, never a whole file) and appears under its key only when the upload
// completes, so a key that exists is a complete file and an interrupted
// export resumes file by file. An aborted file aborts its multipart upload.
package s3sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

// Sink writes under s3://Bucket/Prefix.
type Sink struct {
	client *s3.Client
	files  *s3store.Store
	bucket string
	prefix string
}

var _ bulkclient.Sink = (*Sink)(nil)

// New returns a sink for an s3://bucket/prefix URL. partSize and
// concurrency bound the memory of each file's upload (0: 8 MiB × 2).
func New(client *s3.Client, s3url string, partSize int64, concurrency int) (*Sink, error) {
	bucket, prefix, err := bulkclient.ParseS3URL(s3url)
	if err != nil {
		return nil, err
	}
	files := s3store.New(client, s3store.Options{Bucket: bucket, Prefix: prefix, PartSize: partSize, Concurrency: concurrency})
	return &Sink{client: client, files: files, bucket: bucket, prefix: prefix}, nil
}

// Location implements bulkclient.Sink.
func (s *Sink) Location() string { return "s3://" + s.bucket + "/" + s.prefix }

// Open implements bulkclient.Sink.
func (s *Sink) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + name)})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return out.Body, nil
}

// Create implements bulkclient.Sink. The upload runs on a context that the
// caller's cancellation does not end, so an interrupted file can still abort
// its multipart upload; Abort (through the pipe) is what stops it.
func (s *Sink) Create(ctx context.Context, name string) (bulkclient.SinkFile, error) {
	w, err := s.files.Create(context.WithoutCancel(ctx), name)
	if err != nil {
		return nil, err
	}
	return file{w}, nil
}

type file struct{ w export.FileWriter }

func (f file) Write(p []byte) (int, error) { return f.w.Write(p) }
func (f file) Commit() error               { return f.w.Commit() }
func (f file) Abort()                      { f.w.Abort() }

// List implements bulkclient.Sink.
func (s *Sink) List(ctx context.Context) ([]string, error) {
	var names []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", s.Location(), err)
		}
		for _, o := range page.Contents {
			names = append(names, strings.TrimPrefix(aws.ToString(o.Key), s.prefix))
		}
	}
	return names, nil
}

// Remove implements bulkclient.Sink.
func (s *Sink) Remove(ctx context.Context, name string) error {
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.prefix + name)}); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
