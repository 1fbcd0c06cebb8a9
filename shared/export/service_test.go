package export_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

// failingRunner cannot start jobs.
type failingRunner struct{}

func (failingRunner) Start(context.Context, string) error { return errors.New("no state machine") }
func (failingRunner) Stop(context.Context, string) error  { return nil }

// stuckStore refuses every transition.
type stuckStore struct{ *exporttest.JobStore }

var errStuck = errors.New("table unavailable")

func (stuckStore) Transition(context.Context, string, export.Transition) (*export.Job, error) {
	return nil, errStuck
}

// TestKickoffWhenTheRunnerFails: a job that could not be started is marked
// failed and the client gets a 503; when even that transition fails, the
// error is logged and returned with the 503, not dropped.
func TestKickoffWhenTheRunnerFails(t *testing.T) {
	req := func() *bulkdata.Request {
		return &bulkdata.Request{Level: bulkdata.LevelSystem, OutputFormat: bulkdata.NDJSON}
	}
	src := &exporttest.Source{Lines: map[string][]string{"Patient": lines("Patient", 1)}}
	for _, tc := range []struct {
		name      string
		stuck     bool
		wantStuck bool
	}{
		{"marked failed", false, false},
		{"mark failed fails too", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			mem := exporttest.NewJobStore()
			var jobs export.JobStore = mem
			if tc.stuck {
				jobs = stuckStore{mem}
			}
			svc := export.NewService(jobs, exporttest.NewFileStore(), failingRunner{}, src, export.Config{}, slog.New(slog.NewJSONHandler(&logs, nil)))
			_, err := svc.Kickoff(context.Background(), "c1", req(), "u", "")
			var be *bulkdata.Error
			if !errors.As(err, &be) || be.Status != http.StatusServiceUnavailable {
				t.Fatalf("kick-off error = %v, want a 503", err)
			}
			if got := errors.Is(err, errStuck); got != tc.wantStuck {
				t.Errorf("errors.Is(err, the store's error) = %v, want %v (err %v)", got, tc.wantStuck, err)
			}
			if got := strings.Contains(logs.String(), "mark the unstarted job failed"); got != tc.wantStuck {
				t.Errorf("logged the failed transition = %v, want %v: %s", got, tc.wantStuck, logs.String())
			}
			if !tc.stuck {
				n, err := mem.CountLive(context.Background(), "c1")
				if err != nil || n != 0 {
					t.Errorf("live jobs after the failed start = %d, %v; want 0 (marked failed)", n, err)
				}
			}
		})
	}
}
