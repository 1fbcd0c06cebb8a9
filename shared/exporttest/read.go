package exporttest

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// ReadType reads every segment of typ through src from its start, as the
// export steps would, and returns the lines (skipping bad records).
func ReadType(t testing.TB, src export.Source, q export.Query, typ string) [][]byte {
	t.Helper()
	ctx := context.Background()
	segs, err := src.Plan(ctx, q, typ)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, seg := range segs {
		r, err := src.Open(ctx, q, typ, seg, "")
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, err := r.Next()
			if err == io.EOF {
				break
			}
			var bad *export.BadRecordError
			if errors.As(err, &bad) {
				continue
			}
			if err != nil {
				r.Close()
				t.Fatal(err)
			}
			out = append(out, append([]byte(nil), line...))
		}
		r.Close()
	}
	return out
}
