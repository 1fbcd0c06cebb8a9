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
	// StatusOnly serves the status route only (the status function).
	StatusOnly bool
	Log        *slog.Logger
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
		Log:       o.Log,
	})
	if o.StatusOnly {
		return StatusOnly(h)
	}
	return h
}
