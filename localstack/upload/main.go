// Command upload copies the NDJSON files of a directory into the stack's
// source bucket (LocalStack or AWS; endpoints from AWS_ENDPOINT_URL*),
// streamed through the S3 upload manager.
//
//	go run ./localstack/upload --bucket SOURCE_BUCKET [--prefix P] --dir data
package main

//lint:file-ignore SA1019 feature/s3/manager is deprecated for feature/s3/transfermanager, a 2025 rewrite whose streaming upload has not been measured here; the move is a change of its own, with the multipart tests on MinIO.

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func main() {
	bucket := flag.String("bucket", "", "source bucket (the stack's SourceBucket output)")
	prefix := flag.String("prefix", "", "key prefix (the stack's source prefix)")
	dir := flag.String("dir", "data", "directory of *.ndjson files")
	flag.Parse()
	if err := run(context.Background(), *bucket, *prefix, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "upload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bucket, prefix, dir string) error {
	if bucket == "" {
		return fmt.Errorf("--bucket is required")
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no *.ndjson files in %s", dir)
	}
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return err
	}
	up := manager.NewUploader(s3.NewFromConfig(cfg))
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return err
		}
		key := prefix + filepath.Base(f)
		_, err = up.Upload(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key), Body: fh, ContentType: aws.String("application/fhir+ndjson"),
		})
		fh.Close()
		if err != nil {
			return fmt.Errorf("upload %s: %w", key, err)
		}
		fmt.Printf("s3://%s/%s\n", bucket, key)
	}
	return nil
}
