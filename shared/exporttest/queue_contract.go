package exporttest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// QueueContract checks export.Queue: jobs are admitted in kick-off order,
// never more than maxRunning live ones at once (also when many dispatchers
// race), a job that leaves the live states frees its place at once, and
// jobs that stopped waiting (cancelled) are skipped.
func QueueContract(t *testing.T, newStore func(t *testing.T) export.JobStore) {
	ctx := context.Background()
	base := time.Now().UTC().Truncate(time.Millisecond)
	setup := func(t *testing.T, n int) (export.JobStore, export.Queue, []*export.Job) {
		t.Helper()
		s := newStore(t)
		q, ok := s.(export.Queue)
		if !ok {
			t.Fatalf("%T does not implement export.Queue", s)
		}
		var jobs []*export.Job
		// Enqueued in reverse: the queue orders by kick-off time, not by
		// the order of the calls.
		for i := n - 1; i >= 0; i-- {
			at := base.Add(time.Duration(i) * time.Second)
			j := &export.Job{ID: fmt.Sprintf("q%02d", i), Owner: "c1", Status: export.StatusAccepted,
				TransactionTime: at, CreatedAt: at, UpdatedAt: at, ExpiresAt: at.Add(time.Hour)}
			if err := s.Create(ctx, j); err != nil {
				t.Fatal(err)
			}
			if err := q.Enqueue(ctx, j); err != nil {
				t.Fatal(err)
			}
			jobs = append([]*export.Job{j}, jobs...)
		}
		return s, q, jobs
	}
	admit := func(t *testing.T, q export.Queue, max int, want string) {
		t.Helper()
		got, err := q.AdmitNext(ctx, max)
		if err != nil || got != want {
			t.Fatalf("AdmitNext(%d) = %q, %v; want %q", max, got, err, want)
		}
	}
	end := func(t *testing.T, s export.JobStore, id string, to export.Status) {
		t.Helper()
		if _, err := s.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusAccepted, export.StatusInProgress}, To: to}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("order and places", func(t *testing.T) {
		s, q, jobs := setup(t, 5)
		if ahead, waiting, err := q.Ahead(ctx, jobs[2]); err != nil || !waiting || ahead != 2 {
			t.Fatalf("Ahead(q02) = %d, %v, %v; want 2, true", ahead, waiting, err)
		}
		admit(t, q, 2, "q00")
		admit(t, q, 2, "q01")
		admit(t, q, 2, "") // both places taken
		if ahead, waiting, err := q.Ahead(ctx, jobs[2]); err != nil || !waiting || ahead != 0 {
			t.Fatalf("Ahead(q02) after two admissions = %d, %v, %v; want 0, true", ahead, waiting, err)
		}
		if _, waiting, _ := q.Ahead(ctx, jobs[0]); waiting {
			t.Error("an admitted job still waits")
		}
		if n, oldest, err := q.Waiting(ctx); err != nil || n != 3 || !oldest.Equal(jobs[2].CreatedAt) {
			t.Fatalf("Waiting = %d, %v, %v; want 3, %v", n, oldest, err, jobs[2].CreatedAt)
		}
		if got, err := q.Admitted(ctx); err != nil || !slices.Equal(sorted(got), []string{"q00", "q01"}) {
			t.Fatalf("Admitted = %v, %v; want [q00 q01]", got, err)
		}
		// A completion frees its place at once.
		end(t, s, "q00", export.StatusCompleted)
		admit(t, q, 2, "q02")
		admit(t, q, 2, "")
		// A cancelled waiting job is skipped; a failure frees a place.
		end(t, s, "q03", export.StatusCancelled)
		end(t, s, "q01", export.StatusFailed)
		admit(t, q, 2, "q04")
		admit(t, q, 2, "")
		if got, err := q.Admitted(ctx); err != nil || !slices.Equal(sorted(got), []string{"q02", "q04"}) {
			t.Fatalf("Admitted = %v, %v; want [q02 q04]", got, err)
		}
		if n, _, err := q.Waiting(ctx); err != nil || n != 0 {
			t.Fatalf("Waiting = %d, %v; want 0", n, err)
		}
	})

	t.Run("remove", func(t *testing.T) {
		_, q, jobs := setup(t, 3)
		if err := q.Remove(ctx, jobs[1]); err != nil {
			t.Fatal(err)
		}
		if err := q.Remove(ctx, jobs[1]); err != nil {
			t.Fatalf("a second Remove = %v, want nil", err)
		}
		if _, waiting, _ := q.Ahead(ctx, jobs[1]); waiting {
			t.Error("a removed job still waits")
		}
		if ahead, _, _ := q.Ahead(ctx, jobs[2]); ahead != 1 {
			t.Errorf("Ahead(q02) after removing q01 = %d, want 1", ahead)
		}
		admit(t, q, 5, "q00")
		admit(t, q, 5, "q02")
		admit(t, q, 5, "")
	})

	t.Run("racing dispatchers", func(t *testing.T) {
		const jobsN, maxRunning, dispatchers = 12, 3, 12
		_, q, _ := setup(t, jobsN)
		got, err := RacingAdmits(ctx, q, dispatchers, maxRunning)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"q00", "q01", "q02"}; !slices.Equal(got, want) {
			t.Fatalf("%d racing dispatchers admitted %v, want exactly %v", dispatchers, got, want)
		}
	})
}

// sorted returns ids in order (Admitted lists them in no particular order).
func sorted(ids []string) []string {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

// RacingAdmits calls q.AdmitNext from n goroutines at once and returns the
// ids admitted, sorted (the queue contract's race; exported so a test can
// show it catches a queue that over-admits).
func RacingAdmits(ctx context.Context, q export.Queue, n, maxRunning int) ([]string, error) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var got []string
	var firstErr error
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			id, err := q.AdmitNext(ctx, maxRunning)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if id != "" {
				got = append(got, id)
			}
		}()
	}
	close(start)
	wg.Wait()
	slices.Sort(got)
	return got, firstErr
}
