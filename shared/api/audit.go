package api

import (
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Every kick-off, status poll, cancel and file download is one audit log
// line (message "audit"): who (client), what (event, job, file), how much
// (bytes of the response body), when (the record's time, and ms taken) and
// the outcome (HTTP status). Only ids are logged: never a query string, a
// request body or a header, so no patient id or token reaches the logs.

// Audit events.
const (
	AuditKickoff  = "kickoff"
	AuditStatus   = "status"
	AuditCancel   = "cancel"
	AuditDownload = "download"
)

// audit is what a request's handler records for its audit line.
type audit struct {
	event, client, job, file string
}

// auditOf returns the audit record of the request w answers (a throwaway
// one if w is not the handler's recorder).
func auditOf(w http.ResponseWriter) *audit {
	if rec, ok := w.(*statusRecorder); ok {
		return &rec.audit
	}
	return &audit{}
}

// logRequest writes the request's log line: the audit line for the audited
// events, else the access line.
func (h *Handler) logRequest(rec *statusRecorder, r *http.Request, start time.Time) {
	a := rec.audit
	ms := time.Since(start).Milliseconds()
	if a.event == "" {
		h.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "ms", ms)
		return
	}
	attrs := []slog.Attr{
		slog.String("event", a.event), slog.String("client", a.client), slog.String("job", a.job),
		slog.Int("outcome", rec.status), slog.Int64("bytes", rec.bytes), slog.Int64("ms", ms),
	}
	if a.file != "" {
		attrs = append(attrs, slog.String("file", a.file))
	}
	if enc := rec.Header().Get("Content-Encoding"); enc != "" {
		attrs = append(attrs, slog.String("encoding", enc))
	}
	if loc := rec.Header().Get("Location"); loc != "" && rec.status/100 == 3 {
		// A redirect to a presigned link: the bytes go from S3 directly.
		attrs = append(attrs, slog.Bool("redirected", true))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}

// auditEvent names the audited event of a route, or "".
func auditEvent(method, path string) string {
	switch {
	case strings.HasSuffix(path, "/$export"):
		return AuditKickoff
	case strings.Contains(path, StatusPath) && method == http.MethodDelete:
		return AuditCancel
	case strings.Contains(path, StatusPath):
		return AuditStatus
	case strings.Contains(path, LinkPrefix):
		return AuditDownload
	}
	return ""
}
