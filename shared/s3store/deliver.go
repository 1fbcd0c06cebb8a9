package s3store

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// RedirectLifetime is how long the link a redirect-mode download is sent
// to stays valid: long enough to follow the redirect and start reading
// (S3 checks a presigned URL when the GET starts, not while it streams).
const RedirectLifetime = 5 * time.Minute

// DeliverFile implements api.FileDeliverer (redirect mode, the API has
// authorized the download): 307 to a presigned URL valid for
// RedirectLifetime. Clients drop Authorization on a redirect to another
// host, so S3 sees the presigned URL alone.
func (s *Store) DeliverFile(w http.ResponseWriter, r *http.Request, key string) {
	// A HEAD follows its redirect with a HEAD, which a presigned GET
	// does not admit.
	method := http.MethodGet
	if r.Method == http.MethodHead {
		method = http.MethodHead
	}
	link, err := s.presignOp(r.Context(), key, RedirectLifetime, method)
	if err != nil {
		w.Header().Set("Content-Type", "application/fhir+json")
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write(fhir.Outcome(fhir.SeverityError, fhir.CodeTransient, "the download link could not be made; try again").JSON())
		return
	}
	w.Header().Set("Cache-Control", "private, no-store")
	http.Redirect(w, r, link, http.StatusTemporaryRedirect)
}

// withCredentials presigns with creds instead of the client's.
func withCredentials(creds aws.Credentials) func(*s3.PresignOptions) {
	return func(po *s3.PresignOptions) {
		po.ClientOptions = append(po.ClientOptions, func(o *s3.Options) {
			o.Credentials = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil })
		})
	}
}

// JobIDs lists the jobs that have objects under the prefix (the names of
// its "folders"), for the retention sweep.
func (s *Store) JobIDs(ctx context.Context) ([]string, error) {
	var ids []string
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.opts.Bucket), Prefix: aws.String(s.opts.Prefix), Delimiter: aws.String("/"),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		for _, cp := range page.CommonPrefixes {
			id := strings.TrimSuffix(strings.TrimPrefix(aws.ToString(cp.Prefix), s.opts.Prefix), "/")
			ids = append(ids, id)
		}
	}
	return ids, nil
}
