package apigw

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/awslabs/aws-lambda-go-api-proxy/core"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/settings"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// RequestID is API Gateway's id of the request (stable across a retried
// invocation of the same request).
func RequestID(r *http.Request) string {
	if rc, ok := core.GetAPIGatewayV2ContextFromContext(r.Context()); ok {
		return rc.RequestID
	}
	if rc, ok := requestContextV1(r); ok {
		return rc.RequestID
	}
	return ""
}

// GatewayAuth takes the caller from API Gateway's JWT authorizer (an
// outside issuer): the client_id claim (SMART Backend Services), else sub,
// and the scope claim, enforced as for bulkfhir's own tokens (a token with
// no usable system read scope may read nothing). Without an authorizer
// every caller is the anonymous client, as in the embedded server.
type GatewayAuth struct{}

// Authenticate implements api.Authenticator.
func (GatewayAuth) Authenticate(r *http.Request) (api.Caller, error) {
	rc, ok := core.GetAPIGatewayV2ContextFromContext(r.Context())
	if !ok || rc.Authorizer == nil || rc.Authorizer.JWT == nil {
		return api.Caller{Client: api.AnonymousClient}, nil
	}
	claims := rc.Authorizer.JWT.Claims
	scopes := smartauth.ReadScopes(claims["scope"])
	for _, k := range []string{"client_id", "sub"} {
		if v := claims[k]; v != "" {
			return api.Caller{Client: v, Scopes: scopes}, nil
		}
	}
	return api.Caller{}, fmt.Errorf("the token names no client")
}

// Authenticator is the API's Authenticator for an authorization mode
// (settings.EnvAuth); keys verify bulkfhir's own tokens (mode bulkfhir).
func Authenticator(mode string, keys *smartauth.Keys) api.Authenticator {
	switch mode {
	case settings.AuthGateway:
		return GatewayAuth{}
	case settings.AuthNone:
		return api.Anonymous{}
	}
	return api.Tokens{Keys: keys}
}

// TokenURL is the token endpoint the API advertises: bulkfhir's own
// (the token function, under the same base) or the outside issuer's
// (outside, mode gateway).
func TokenURL(mode, outside string) string {
	switch mode {
	case settings.AuthBulkfhir:
		return smartauth.TokenPath
	case settings.AuthGateway:
		return outside
	}
	return ""
}

// StatusOnly serves the status route (and the download route of redirect
// mode) and answers every other path with a 404 OperationOutcome (API
// Gateway routes only those to the status function).
func StatusOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, api.StatusPath) && !strings.Contains(r.URL.Path, api.LinkPrefix) {
			w.Header().Set("Content-Type", "application/fhir+json")
			w.WriteHeader(http.StatusNotFound)
			w.Write(fhir.Outcome(fhir.SeverityError, fhir.CodeNotSupported, "not found: this function serves the status route only").JSON())
			return
		}
		h.ServeHTTP(w, r)
	})
}
