package api

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

// statusRecheck is how often a held status request looks at its job again.
const statusRecheck = 25 * time.Millisecond

// holdStatus answers a status GET that sent Prefer: wait=N (RFC 7240) no
// sooner than it needs to: it waits until the export is no longer running,
// its partial manifest lists more files, the client goes away, or N seconds
// (at most Config.StatusWait) have passed. Retry-After has whole seconds,
// so without it a client learns of a finished export up to a polling
// interval late; the wait ends within statusRecheck of the change. It
// returns the seconds of wait applied (0: not held), which the response
// reports in Preference-Applied, so the client knows the interval is
// already spent. The answer itself comes from the normal status path, so a
// held request answers exactly as an unheld one at the same moment.
func (h *Handler) holdStatus(ctx context.Context, r *http.Request, owner, id, cursor string) int {
	if r.Method != http.MethodGet || h.cfg.StatusWait <= 0 {
		return 0
	}
	asked := bulkdata.ParsePrefer(r.Header).Wait
	if asked <= 0 {
		return 0
	}
	wait := min(time.Duration(asked)*time.Second, h.cfg.StatusWait)
	applied := max(1, int(wait/time.Second))
	first, err := h.svc.StatusPage(ctx, owner, id, cursor)
	if err != nil || !first.Job.Status.Live() {
		return 0 // answered at once by the status path
	}
	files := listed(first)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	tick := time.NewTicker(statusRecheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return applied
		case <-timer.C:
			return applied
		case <-tick.C:
		}
		rep, err := h.svc.StatusPage(ctx, owner, id, cursor)
		if err != nil || !rep.Job.Status.Live() || listed(rep) != files {
			return applied
		}
	}
}

// listed counts what a running export's partial manifest page shows: its
// files and whether it links on.
func listed(rep *export.StatusReport) int {
	if rep.Manifest == nil {
		return 0
	}
	n := len(rep.Manifest.Output) + len(rep.Manifest.Error) + len(rep.Manifest.Deleted)
	if rep.Next != "" {
		n++
	}
	return n
}

func preferenceAppliedWait(seconds int) string { return "wait=" + strconv.Itoa(seconds) }
