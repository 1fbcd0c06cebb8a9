package apigw

import (
	"log/slog"
	"net/http"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Options configure the HTTP API behind API Gateway.
type Options struct {
	// BaseURL is the public FHIR base URL ("" derives it per request).
	BaseURL string
	// Auth is the authorization mode (settings.EnvAuth); Keys verify
	// bulkfhir's own tokens (mode bulkfhir); TokenURL is the outside
	// issuer's token endpoint (mode gateway).
	Auth, TokenURL string
	Keys           *smartauth.Keys
	// StatusOnly serves the status route only (the status function), and
	// the download route when Deliver is set.
	StatusOnly bool
	// Deliver answers redirect-mode downloads (lambdaenv.Links).
	Deliver api.FileDeliverer
	Log     *slog.Logger
}

// Handler is the HTTP API as served behind API Gateway: the caller from
// the configured authenticator and API Gateway's request id as the
// kick-off idempotency key.
func Handler(svc *export.Service, o Options) http.Handler {
	h := api.New(svc, api.Config{
		BaseURL:   o.BaseURL,
		Auth:      Authenticator(o.Auth, o.Keys),
		TokenURL:  TokenURL(o.Auth, o.TokenURL),
		RequestID: RequestID,
		Deliver:   o.Deliver,
		Fits:      Fits,
		Log:       o.Log,
	})
	if o.StatusOnly {
		return StatusOnly(h)
	}
	return h
}

// DeliveringStore is a file store that can also answer an authorized
// download (s3store: a redirect to a short-lived presigned link).
type DeliveringStore interface {
	export.FileStore
	api.FileDeliverer
}

// DownloadLinks returns the file store the service builds the manifest's
// links with and the deliverer of the download route (Options.Deliver):
// in presigned mode files, with links presigned by it; in redirect mode
// links to the API. The function that serves the route (serve: the status
// function, which may assume the download signer) gets files as the
// deliverer in both modes: in presigned mode a manifest too large for one
// response with presigned links links to the route instead
// (api.Config.Fits).
func DownloadLinks(files DeliveringStore, redirect, serve bool) (export.FileStore, api.FileDeliverer) {
	var deliver api.FileDeliverer
	if serve {
		deliver = files
	}
	if !redirect {
		return files, deliver
	}
	return api.RedirectLinks(files), deliver
}
