package lambdaenv

import (
	"context"
	"errors"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// errNoSource is what NoSource answers: the function has no source.
var errNoSource = errors.New("this function reads no source")

// NoSource is the Source of the functions that never read it (status,
// finalize, fail): status, cancel, Finalize and Fail never call it, so
// they need no source client or credentials; anything that tried would
// fail here, not with an IAM denial.
type NoSource struct{}

func (NoSource) Caps() export.SourceCaps                                { return export.SourceCaps{} }
func (NoSource) Types(context.Context) ([]string, error)                { return nil, errNoSource }
func (NoSource) GroupMembers(context.Context, string) ([]string, error) { return nil, errNoSource }
func (NoSource) MissingPatients(context.Context, []string) ([]string, error) {
	return nil, errNoSource
}
func (NoSource) Plan(context.Context, export.Query, string) ([]string, error) {
	return nil, errNoSource
}
func (NoSource) Open(context.Context, export.Query, string, string, string) (export.Reader, error) {
	return nil, errNoSource
}
