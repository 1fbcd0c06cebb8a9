// Package s3store is the FileStore on S3. Files stream into S3 through the
// SDK's upload manager (multipart, parts of PartSize, never a whole file in
// memory) behind an io.Pipe; the object appears only when the upload
// completes, and an aborted writer aborts the multipart upload. Keys sit
// under Prefix + "<job>/"; links are presigned GETs that expire with the job
// (never later), so the manifest says requiresAccessToken: false.
package s3store

//lint:file-ignore SA1019 feature/s3/manager is deprecated for feature/s3/transfermanager, a 2025 rewrite whose streaming upload has not been measured here; the move is a change of its own, with the multipart tests on MinIO.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/gzfile"
)

// MaxPresign is the longest validity SigV4 allows a presigned URL.
const MaxPresign = 7 * 24 * time.Hour

// Options tune the store.
type Options struct {
	Bucket string
	// Prefix is prepended to every key (e.g. "exports/").
	Prefix string
	// PartSize and Concurrency bound the upload manager's memory per file
	// (PartSize × Concurrency); defaults 8 MiB × 2.
	PartSize    int64
	Concurrency int
	// Compress stores NDJSON files gzip-compressed with Content-Encoding:
	// gzip (gzfile): the export bucket. Off, files are stored as written
	// (the client's S3 output, s3sink).
	Compress bool
}

// Store is an export.FileStore on an S3 bucket.
type Store struct {
	client   *s3.Client
	presign  *s3.PresignClient
	uploader *manager.Uploader
	opts     Options
	now      func() time.Time
	// signer, when set, supplies the credentials links are signed with
	// (signer.go); otherwise the client's own sign them.
	signer *Signer
}

// SetSigner signs links with the signer's sessions: no link outlives the
// session that signed it.
func (s *Store) SetSigner(sg *Signer) { s.signer = sg }

// SetClock replaces the clock links are timed by (tests).
func (s *Store) SetClock(now func() time.Time) { s.now = now }

var _ export.FileStore = (*Store)(nil)

// New returns a store using client.
func New(client *s3.Client, opts Options) *Store {
	if opts.PartSize < manager.MinUploadPartSize {
		opts.PartSize = 8 << 20
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	up := manager.NewUploader(client, func(u *manager.Uploader) {
		u.PartSize = opts.PartSize
		u.Concurrency = opts.Concurrency
	})
	return &Store{client: client, presign: s3.NewPresignClient(client), uploader: up, opts: opts, now: time.Now}
}

func (s *Store) objectKey(key string) string { return s.opts.Prefix + key }

var errAborted = errors.New("upload aborted")

type writer struct {
	pw *io.PipeWriter
	// zw compresses NDJSON files into pw (gzfile); out is zw or pw.
	zw   *gzfile.Writer
	out  io.Writer
	done chan error
}

// Create implements export.FileStore. With Compress, NDJSON files are
// stored gzip-compressed with Content-Encoding: gzip (gzfile).
func (s *Store) Create(ctx context.Context, key string) (export.FileWriter, error) {
	pr, pw := io.Pipe()
	w := &writer{pw: pw, out: pw, done: make(chan error, 1)}
	in := &s3.PutObjectInput{
		Bucket:      aws.String(s.opts.Bucket),
		Key:         aws.String(s.objectKey(key)),
		Body:        pr,
		ContentType: aws.String("application/fhir+ndjson"),
	}
	if s.opts.Compress && gzfile.Compressed(key) {
		w.zw = gzfile.NewWriter(pw)
		w.out = w.zw
		in.ContentEncoding = aws.String(gzfile.Encoding)
	}
	go func() {
		_, err := s.uploader.Upload(ctx, in)
		pr.CloseWithError(err) // unblocks a writer if the upload failed early
		w.done <- err
	}()
	return w, nil
}

func (w *writer) Write(p []byte) (int, error) { return w.out.Write(p) }

func (w *writer) Commit() error {
	if w.zw != nil {
		if err := w.zw.Close(); err != nil {
			w.pw.CloseWithError(err)
			<-w.done
			return fmt.Errorf("upload: %w", err)
		}
	}
	w.pw.Close()
	if err := <-w.done; err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

func (w *writer) Abort() error {
	w.pw.CloseWithError(errAborted)
	<-w.done
	return nil
}

// URL implements export.FileStore: a presigned GET valid until expires (at
// most MaxPresign), or less with a Signer whose session ends before.
func (s *Store) URL(ctx context.Context, key string, expires time.Time) (string, error) {
	d := expires.Sub(s.now())
	if d <= 0 {
		return "", fmt.Errorf("link for %s: already expired", key)
	}
	return s.presignFor(ctx, key, min(d, MaxPresign))
}

// presignFor presigns a GET of key valid for d (or less, see URL).
func (s *Store) presignFor(ctx context.Context, key string, d time.Duration) (string, error) {
	return s.presignOp(ctx, key, d, http.MethodGet)
}

// presignOp presigns a GET or a HEAD of key valid for d (or less, as the
// signer's session allows).
func (s *Store) presignOp(ctx context.Context, key string, d time.Duration, method string) (string, error) {
	opts := []func(*s3.PresignOptions){s3.WithPresignExpires(d)}
	if s.signer != nil {
		creds, valid, err := s.signer.Credentials(ctx, d)
		if err != nil {
			return "", fmt.Errorf("link for %s: %w", key, err)
		}
		opts = []func(*s3.PresignOptions){s3.WithPresignExpires(valid), withCredentials(creds)}
	}
	bucket, objKey := aws.String(s.opts.Bucket), aws.String(s.objectKey(key))
	var req *v4.PresignedHTTPRequest
	var err error
	if method == http.MethodHead {
		req, err = s.presign.PresignHeadObject(ctx, &s3.HeadObjectInput{Bucket: bucket, Key: objKey}, opts...)
	} else {
		req, err = s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: bucket, Key: objKey}, opts...)
	}
	if err != nil {
		return "", fmt.Errorf("presign %s: %w", key, err)
	}
	return req.URL, nil
}

// Open implements export.FileStore with a GetObject.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.opts.Bucket), Key: aws.String(s.objectKey(key))})
	var nsk *types.NoSuchKey
	if errors.As(err, &nsk) {
		return nil, fmt.Errorf("open %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	rc, err := gzfile.NewReader(out.Body)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	return rc, nil
}

// DeleteJob implements export.FileStore: every object under the job's prefix.
func (s *Store) DeleteJob(ctx context.Context, jobID string) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.opts.Bucket),
		Prefix: aws.String(s.objectKey(jobID + "/")),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list files of %s: %w", jobID, err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, 0, len(page.Contents))
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(s.opts.Bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		})
		if err != nil {
			return fmt.Errorf("delete files of %s: %w", jobID, err)
		}
		if len(out.Errors) > 0 {
			return fmt.Errorf("delete files of %s: %d objects failed, first: %s", jobID, len(out.Errors), aws.ToString(out.Errors[0].Message))
		}
	}
	return nil
}
