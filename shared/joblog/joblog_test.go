package joblog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/joblog"
)

func TestHandler(t *testing.T) {
	withJob := joblog.With(context.Background(), "j1")
	cases := []struct {
		name    string
		ctx     context.Context
		log     func(l *slog.Logger, ctx context.Context)
		wantJob string
		// jobs is how often "job" appears in the line.
		jobs int
	}{
		{"from the context", withJob, func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "x") }, "j1", 1},
		{"no job anywhere", context.Background(), func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "x") }, "", 0},
		{"record's own wins", withJob, func(l *slog.Logger, ctx context.Context) { l.InfoContext(ctx, "x", "job", "j2") }, "j2", 1},
		{"logger's own wins", withJob, func(l *slog.Logger, ctx context.Context) { l.With("job", "j3").InfoContext(ctx, "x") }, "j3", 1},
		{"in a group, once", withJob, func(l *slog.Logger, ctx context.Context) { l.WithGroup("g").InfoContext(ctx, "x", "a", 1) }, "", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tc.log(slog.New(joblog.NewHandler(slog.NewJSONHandler(&buf, nil))), tc.ctx)
			if n := strings.Count(buf.String(), `"job"`); n != tc.jobs {
				t.Fatalf("%q appears %d times in %s, want %d", "job", n, buf.String(), tc.jobs)
			}
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			if tc.wantJob != "" && m["job"] != tc.wantJob {
				t.Errorf("job = %v, want %s: %s", m["job"], tc.wantJob, buf.String())
			}
		})
	}
}
