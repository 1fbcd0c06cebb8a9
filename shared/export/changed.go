package export

import (
	"fmt"
	"io"

	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// SourceChangedError is returned by a Source when an object (a file, an S3
// object) changed between Plan and its read: its size, modification time
// or ETag differs from what was planned. The segment cannot be read
// consistently any more (lines moved, so reading on would duplicate some
// resources and lose others); ExportChunk ends the unit there and reports
// the rest of the segment as not exported, naming the object.
type SourceChangedError struct {
	Object string
	Reason string
}

func (e *SourceChangedError) Error() string {
	return fmt.Sprintf("source object %s changed during the export: %s", e.Object, e.Reason)
}

// issue is the error record ExportChunk writes for the unit.
func (e *SourceChangedError) issue(typ string) fhir.Issue {
	return fhir.Issue{
		Severity: fhir.SeverityError,
		Code:     "conflict",
		Diagnostics: fmt.Sprintf("%s resources of %s were not exported from here on: the file changed during the export (%s); "+
			"start a new export once the source is stable", typ, e.Object, e.Reason),
	}
}

// emptyReader is a Reader at its end, for a unit that cannot be read on.
type emptyReader struct{ cursor string }

func (r emptyReader) Next() ([]byte, error) { return nil, io.EOF }
func (r emptyReader) Cursor() string        { return r.cursor }
func (r emptyReader) Close() error          { return nil }
