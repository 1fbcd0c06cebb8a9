package lambdaenv

import (
	"context"
	"encoding/json"
	"log/slog"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/metrics"
	"github.com/bulkfhir/bulkfhir/shared/stepmetrics"
)

// DispatchHandler is the dispatch function's handler. Every event runs one
// sweep of the queue: EventBridge's "execution status change" events (a
// job's execution ended, so its running place is free) and the periodic
// schedule (the safety net: a dispatch that failed, an admitted job whose
// start was lost, and the figures of the stuck-export alarm). The event's
// content does not matter, so a duplicate or late event is harmless.
func DispatchHandler(svc *export.Service, rec metrics.Recorder, log *slog.Logger) func(context.Context, json.RawMessage) (*export.SweepReport, error) {
	return func(ctx context.Context, _ json.RawMessage) (*export.SweepReport, error) {
		rep, err := svc.Sweep(ctx)
		if err != nil {
			log.ErrorContext(ctx, "sweep", "err", err)
			return rep, err
		}
		log.InfoContext(ctx, "sweep", "running", rep.Running, "queued", rep.Queued,
			"started", len(rep.Started), "restarted", len(rep.Restarted))
		stepmetrics.RecordSweep(ctx, rec, rep)
		return rep, nil
	}
}
