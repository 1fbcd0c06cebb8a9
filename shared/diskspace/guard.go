// Package diskspace keeps the embedded server's storage usable: a reserve
// of free space below which new kick-offs are refused with 503 and
// Retry-After (so the job store always has room to record a failure or a
// cancel), and an optional per-client quota of stored export bytes.
package diskspace

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// Free returns the bytes available to this process on dir's filesystem.
func Free(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Guard is an export.Admission on a directory's free space and a quota.
type Guard struct {
	// Dir is where exports and the job store live.
	Dir string
	// Reserve: kick-offs are refused while less than this is free.
	Reserve int64
	// Quota bounds the export bytes one client may have stored (0: none).
	Quota int64
	// Usage returns the export bytes a client has stored.
	Usage func(ctx context.Context, owner string) (int64, error)
}

// Admit implements export.Admission.
func (g *Guard) Admit(ctx context.Context, owner string) error {
	if g.Reserve > 0 {
		free, err := Free(g.Dir)
		if err != nil {
			return err
		}
		if free < g.Reserve {
			e := bulkdata.NewError(http.StatusServiceUnavailable, fhir.CodeTransient,
				"the server is low on storage and accepts no new exports right now; try again later")
			e.RetryAfter = time.Minute
			return e
		}
	}
	if g.Quota > 0 && g.Usage != nil {
		used, err := g.Usage(ctx, owner)
		if err != nil {
			return err
		}
		if used >= g.Quota {
			e := bulkdata.NewError(http.StatusTooManyRequests, fhir.CodeTooCostly,
				fmt.Sprintf("this client's exports use %d bytes of its %d-byte storage quota; delete finished exports (DELETE their status URL) or wait for them to expire", used, g.Quota))
			e.RetryAfter = time.Minute
			return e
		}
	}
	return nil
}
