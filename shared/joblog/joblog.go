// Package joblog gives every log line written while a job's step runs a
// structured "job" field, also the lines of code that knows nothing of
// jobs (the upstream client's retries, the SDK): the step's context
// carries the job id, and a slog.Handler adds it to each record that does
// not have it yet. Finding one job's logs is then one filter on "job".
package joblog

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns ctx carrying the job id.
func With(ctx context.Context, job string) context.Context {
	if job == "" {
		return ctx
	}
	return context.WithValue(ctx, key{}, job)
}

// From returns the job id ctx carries, or "".
func From(ctx context.Context) string {
	v, _ := ctx.Value(key{}).(string)
	return v
}

// Handler adds the context's job id as the attribute "job" to records that
// have none (neither in the record nor from Logger.With).
type Handler struct {
	inner  slog.Handler
	hasJob bool
}

// NewHandler wraps h.
func NewHandler(h slog.Handler) *Handler { return &Handler{inner: h} }

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if job := From(ctx); job != "" && !h.hasJob {
		found := false
		r.Attrs(func(a slog.Attr) bool {
			found = a.Key == "job"
			return !found
		})
		if !found {
			r = r.Clone()
			r.AddAttrs(slog.String("job", job))
		}
	}
	return h.inner.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	has := h.hasJob
	for _, a := range attrs {
		has = has || a.Key == "job"
	}
	return &Handler{inner: h.inner.WithAttrs(attrs), hasJob: has}
}

// WithGroup implements slog.Handler. A record of a grouped logger gets the
// job inside the group (no logger of bulkfhir's uses groups).
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), hasJob: h.hasJob}
}
