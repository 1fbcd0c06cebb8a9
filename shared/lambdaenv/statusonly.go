package lambdaenv

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// errNoSource is what the status function's source answers: it has none.
var errNoSource = errors.New("the status function reads no source")

// noSource is the status function's Source. Status and cancel never read
// the source; anything that tried would fail here, not with an IAM denial.
type noSource struct{}

func (noSource) Caps() export.SourceCaps                                { return export.SourceCaps{} }
func (noSource) Types(context.Context) ([]string, error)                { return nil, errNoSource }
func (noSource) GroupMembers(context.Context, string) ([]string, error) { return nil, errNoSource }
func (noSource) MissingPatients(context.Context, []string) ([]string, error) {
	return nil, errNoSource
}
func (noSource) Plan(context.Context, export.Query, string) ([]string, error) {
	return nil, errNoSource
}
func (noSource) Open(context.Context, export.Query, string, string, string) (export.Reader, error) {
	return nil, errNoSource
}

// statusOnly serves the status route (and the download route of redirect
// mode) and answers every other path with a 404 OperationOutcome (API
// Gateway routes only those here).
func statusOnly(h http.Handler) http.Handler {
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
