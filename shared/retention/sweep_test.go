package retention

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

type fakeFiles struct{ jobs []string }

func (f *fakeFiles) JobIDs(context.Context) ([]string, error) { return slices.Clone(f.jobs), nil }
func (f *fakeFiles) DeleteJob(_ context.Context, id string) error {
	f.jobs = slices.DeleteFunc(f.jobs, func(j string) bool { return j == id })
	return nil
}

// fakeJobs deletes as strictly as the conditional delete: only ended,
// expired (or cancelled) jobs.
type fakeJobs struct{ jobs map[string]*export.Job }

func (f *fakeJobs) Get(_ context.Context, id string) (*export.Job, error) {
	if j, ok := f.jobs[id]; ok {
		return j, nil
	}
	return nil, export.ErrJobNotFound
}

func (f *fakeJobs) DeleteExpired(_ context.Context, id string, now time.Time) (bool, error) {
	j, ok := f.jobs[id]
	if !ok || !Due(j, now) {
		return false, nil
	}
	delete(f.jobs, id)
	return true, nil
}

func TestSweep(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	id := func(c byte) string {
		b := make([]byte, 32)
		for i := range b {
			b[i] = c
		}
		return string(b)
	}
	for _, tc := range []struct {
		name    string
		job     *export.Job // nil: no record
		now     time.Time
		deleted bool
	}{
		{"completed, at Expires", &export.Job{Status: export.StatusCompleted, ExpiresAt: t0}, t0, false},
		{"completed, after Expires", &export.Job{Status: export.StatusCompleted, ExpiresAt: t0}, t0.Add(time.Second), true},
		{"failed, after Expires", &export.Job{Status: export.StatusFailed, ExpiresAt: t0}, t0.Add(time.Minute), true},
		{"cancelled", &export.Job{Status: export.StatusCancelled, ExpiresAt: t0.Add(time.Hour)}, t0, true},
		{"in progress, long expired", &export.Job{Status: export.StatusInProgress, ExpiresAt: t0}, t0.Add(48 * time.Hour), false},
		{"accepted", &export.Job{Status: export.StatusAccepted, ExpiresAt: t0}, t0.Add(time.Hour), false},
		{"no record", nil, t0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := id('a')
			files := &fakeFiles{jobs: []string{job, "mapruns", "not-a-job"}}
			jobs := &fakeJobs{jobs: map[string]*export.Job{}}
			if tc.job != nil {
				tc.job.ID = job
				jobs.jobs[job] = tc.job
			}
			if _, err := Sweep(context.Background(), jobs, files, tc.now, slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			gone := !slices.Contains(files.jobs, job)
			if gone != tc.deleted {
				t.Errorf("files deleted = %v, want %v", gone, tc.deleted)
			}
			if _, err := jobs.Get(context.Background(), job); tc.job != nil && errors.Is(err, export.ErrJobNotFound) != tc.deleted {
				t.Errorf("record deleted = %v, want %v", !tc.deleted, tc.deleted)
			}
			if !slices.Contains(files.jobs, "mapruns") || !slices.Contains(files.jobs, "not-a-job") {
				t.Error("a folder that is not a job's was deleted")
			}
		})
	}
}
