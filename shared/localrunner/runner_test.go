package localrunner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/retry"
	"github.com/bulkfhir/bulkfhir/shared/waitfor"
)

// fullStore refuses to record a failure the first `refuse` times, as a
// store on a full disk would.
type fullStore struct {
	*exporttest.JobStore
	refuse atomic.Int32
}

func (s *fullStore) Transition(ctx context.Context, id string, t export.Transition) (*export.Job, error) {
	if t.To == export.StatusFailed && s.refuse.Add(-1) >= 0 {
		return nil, errors.New("write jobs.db: no space left on device")
	}
	return s.JobStore.Transition(ctx, id, t)
}

// brokenSource cannot list its types: Plan fails after its retries.
type brokenSource struct{ *exporttest.Source }

func (brokenSource) Types(context.Context) ([]string, error) {
	return nil, errors.New("source gone")
}

// TestUnrecordedFailureIsRetried: a job whose failure cannot be recorded
// does not stay in progress; the runner records it on a later write.
func TestUnrecordedFailureIsRetried(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	jobs := &fullStore{JobStore: exporttest.NewJobStore()}
	jobs.refuse.Store(3) // Fail's first try and its retry after deleting files, then one background try
	files := exporttest.NewFileStore()
	steps := export.NewSteps(jobs, files, brokenSource{&exporttest.Source{}}, export.Config{}, quiet)
	now := time.Now().UTC()
	if err := jobs.Create(context.Background(), &export.Job{ID: "j", Owner: "c", Status: export.StatusAccepted,
		Request: bulkdata.Request{Level: bulkdata.LevelSystem}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r := New(steps, jobs, Options{Retry: retry.Policy{Interval: time.Millisecond, MaxAttempts: 1}, FailRetry: retry.Policy{Interval: time.Millisecond}}, quiet)
	defer r.Shutdown(context.Background())
	if err := r.Start(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
	var j *export.Job
	failed := waitfor.Condition(30*time.Second, 5*time.Millisecond, func() bool {
		var err error
		if j, err = jobs.Get(context.Background(), "j"); err != nil {
			t.Fatal(err)
		}
		return j.Status == export.StatusFailed
	})
	if !failed {
		t.Fatalf("job still %s; its failure was never recorded", j.Status)
	}
	if n := jobs.refuse.Load(); n >= 0 {
		t.Errorf("the store refused %d fewer times than set: the retry path did not run", n+1)
	}
}
