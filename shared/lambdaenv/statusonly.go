package lambdaenv

import (
	"context"
	"errors"

	"github.com/bulkfhir/bulkfhir/shared/export"
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
