// Package s3source reads NDJSON objects under an S3 prefix as an export
// Source (ndjsonsource over S3): objects are listed with ListObjectsV2 and
// read with ranged GETs, so a segment of a large object is fetched on its
// own. Objects named "<Type>.….ndjson" or "<Type>/….ndjson" are typed by
// their name; others are read once to index them.
package s3source

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
	"github.com/aws/smithy-go"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/ndjsonsource"
)

// API is the part of the S3 client the source uses.
type API interface {
	s3.ListObjectsV2APIClient
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
}

// Objects is ndjsonsource.Objects under s3://Bucket/Prefix.
type Objects struct {
	API    API
	Bucket string
	Prefix string
}

var _ ndjsonsource.Objects = Objects{}

// New returns the export source over s3://bucket/prefix.
func New(api API, bucket, prefix string, segmentBytes int64) *ndjsonsource.Source {
	return NewIndexed(api, bucket, prefix, segmentBytes, nil)
}

// NewIndexed is New with a store for the source's patient indexes (nil:
// none; Patient and Group exports then read whole objects).
func NewIndexed(api API, bucket, prefix string, segmentBytes int64, index ndjsonsource.IndexStore) *ndjsonsource.Source {
	return ndjsonsource.NewFromObjects(Objects{API: api, Bucket: bucket, Prefix: prefix},
		ndjsonsource.Options{SegmentBytes: segmentBytes, TypesByName: true, Index: index})
}

// List implements ndjsonsource.Objects.
func (o Objects) List(ctx context.Context) ([]ndjsonsource.Object, error) {
	var out []ndjsonsource.Object
	p := s3.NewListObjectsV2Paginator(o.API, &s3.ListObjectsV2Input{Bucket: aws.String(o.Bucket), Prefix: aws.String(o.Prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list s3://%s/%s: %w", o.Bucket, o.Prefix, err)
		}
		for _, obj := range page.Contents {
			key := aws.ToString(obj.Key)
			if !strings.HasSuffix(key, ".ndjson") {
				continue
			}
			out = append(out, ndjsonsource.Object{
				Name:    strings.TrimPrefix(key, o.Prefix),
				Size:    aws.ToInt64(obj.Size),
				Version: aws.ToString(obj.ETag),
			})
		}
	}
	return out, nil
}

// Open implements ndjsonsource.Objects with a ranged GET. With a version
// (the ETag List saw), the GET carries If-Match, so S3 itself refuses to
// serve a replaced object (412) instead of bytes of another content.
func (o Objects) Open(ctx context.Context, name, version string, start, end int64) (io.ReadCloser, error) {
	if end <= start {
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{
		Bucket: aws.String(o.Bucket),
		Key:    aws.String(o.Prefix + name),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", start, end-1)),
	}
	if version != "" {
		in.IfMatch = aws.String(version)
	}
	out, err := o.API.GetObject(ctx, in)
	var apiErr smithy.APIError
	if version != "" && errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "PreconditionFailed":
			return nil, &export.SourceChangedError{Object: name, Reason: "its ETag is no longer " + version}
		case "NoSuchKey":
			return nil, &export.SourceChangedError{Object: name, Reason: "it was deleted"}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s%s: %w", o.Bucket, o.Prefix, name, err)
	}
	return out.Body, nil
}

// IndexStore is ndjsonsource.IndexStore under s3://Bucket/Prefix: the
// patient indexes of a source, kept in the export bucket beside the jobs.
type IndexStore struct {
	API    IndexAPI
	Bucket string
	Prefix string
}

// IndexAPI is the part of the S3 client the index store uses.
type IndexAPI interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
}

var _ ndjsonsource.IndexStore = IndexStore{}

// Put implements ndjsonsource.IndexStore. r is read whole (an index body
// is a temporary file; the SDK needs a length or a seekable body).
func (x IndexStore) Put(ctx context.Context, key string, r io.Reader) error {
	_, err := x.API.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(x.Bucket), Key: aws.String(x.Prefix + key), Body: r,
	})
	if err != nil {
		return fmt.Errorf("put s3://%s/%s%s: %w", x.Bucket, x.Prefix, key, err)
	}
	return nil
}

// Get implements ndjsonsource.IndexStore with a ranged GET.
func (x IndexStore) Get(ctx context.Context, key string, start, end int64) (io.ReadCloser, error) {
	if end >= 0 && end <= start {
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(x.Bucket), Key: aws.String(x.Prefix + key)}
	switch {
	case end >= 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", start, end-1))
	case start > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", start))
	}
	out, err := x.API.GetObject(ctx, in)
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("s3://%s/%s%s: %w", x.Bucket, x.Prefix, key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("read s3://%s/%s%s: %w", x.Bucket, x.Prefix, key, err)
	}
	return out.Body, nil
}
