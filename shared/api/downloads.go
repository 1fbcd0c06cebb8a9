package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Download modes: how the manifest's links are answered.
const (
	// DownloadsSigned (the default; "presigned" on AWS) puts links the
	// file store signs in the manifest: presigned S3 URLs or HMAC links,
	// valid without a bearer token until they expire.
	DownloadsSigned = "signed"
	// DownloadsRedirect puts [base]/bulkfiles/{key} in the manifest with
	// requiresAccessToken true: every download is authorized by the
	// owner's bearer token and scopes, then streamed or redirected to a
	// link valid for a few minutes. For clients that send their token to
	// every file URL (S3 refuses a presigned URL that also carries one),
	// and for deployments that must log every download.
	DownloadsRedirect = "redirect"
)

// ParseDownloads reads a download mode setting ("" is the default).
func ParseDownloads(v string) (string, error) {
	switch strings.TrimSpace(v) {
	case "", DownloadsSigned, "presigned":
		return DownloadsSigned, nil
	case DownloadsRedirect:
		return DownloadsRedirect, nil
	}
	return "", fmt.Errorf("downloads mode %q: want presigned (signed) or redirect", v)
}

// FileDeliverer answers a download the API has authorized (redirect
// mode): it streams the file or redirects to a short-lived link.
type FileDeliverer interface {
	DeliverFile(w http.ResponseWriter, r *http.Request, key string)
}

// RedirectLinks makes a file store's manifest links point at the API's
// download route ([base]/bulkfiles/{key}) instead of signed links.
func RedirectLinks(files export.FileStore) export.FileStore { return redirectLinks{files} }

type redirectLinks struct{ export.FileStore }

// URL implements export.FileStore.
func (r redirectLinks) URL(ctx context.Context, key string, exp time.Time) (string, error) {
	return routeLinks{}.URL(ctx, key, exp)
}

// routeLinks are links to the API's download route, [base]/bulkfiles/{key}:
// a few dozen bytes each, where a presigned S3 URL is more than a
// kilobyte.
type routeLinks struct{}

// URL implements export.Linker.
func (routeLinks) URL(ctx context.Context, key string, _ time.Time) (string, error) {
	base := export.BaseURL(ctx)
	if base == "" {
		return "", errors.New("file link: no base URL in context")
	}
	if !fileKeyRE.MatchString(key) {
		return "", fmt.Errorf("file link: invalid key %q", key)
	}
	return strings.TrimSuffix(base, "/") + LinkPrefix + key, nil
}

// fileKeyRE admits the keys the export steps make: slash-separated
// segments of letters, digits, '.', '-' and '_' that do not start with a
// dot.
var fileKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$`)

// deliver answers a download in redirect mode: always authenticated (an
// anonymous server's one client included), an exported file's key and
// the job visible to the caller (else 404, as for status), the caller's
// scopes covering the file's type (else 403); then the deliverer streams
// or redirects.
func (h *Handler) deliver(w http.ResponseWriter, r *http.Request, key string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		methodNotAllowed(w, "GET, HEAD")
		return
	}
	jobID, _, _ := strings.Cut(key, "/")
	// Only exported files (every manifest file is .ndjson): not the plan,
	// patient batches, cursors or spill parts a job keeps beside them.
	if !fileKeyRE.MatchString(key) || !export.ValidJobID(jobID) || !strings.HasSuffix(key, ".ndjson") {
		if caller, ok := h.authenticate(w, r); ok {
			auditOf(w).client = caller.Client
			writeOutcome(w, http.StatusNotFound, fhir.CodeNotFound, "no such file")
		}
		return
	}
	a := auditOf(w)
	a.job, a.file = jobID, key
	if h.checkFile(w, r, key) {
		h.cfg.Deliver.DeliverFile(w, r, key)
	}
}
