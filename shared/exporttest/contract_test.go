package exporttest_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

func TestFakeJobStore(t *testing.T) {
	exporttest.JobStoreContract(t, func(*testing.T) export.JobStore { return exporttest.NewJobStore() })
}

func TestFakeCappedCreator(t *testing.T) {
	exporttest.CappedCreatorContract(t, func(*testing.T) export.JobStore { return exporttest.NewJobStore() })
}

func TestQueueContract(t *testing.T) {
	exporttest.QueueContract(t, func(*testing.T) export.JobStore { return exporttest.NewJobStore() })
}

// checkThenAct is a queue that counts its running jobs and admits in two
// steps, the way a store without a transaction would. checked holds every
// dispatcher between its check and its admission, so the race it loses is
// certain, not timing-dependent.
type checkThenAct struct {
	*exporttest.JobStore
	mu      sync.Mutex
	running int
	queue   []string
	checked sync.WaitGroup
}

func (q *checkThenAct) AdmitNext(_ context.Context, max int) (string, error) {
	q.mu.Lock()
	free := q.running < max
	q.mu.Unlock()
	q.checked.Done()
	q.checked.Wait()
	if !free {
		return "", nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.queue) == 0 {
		return "", nil
	}
	id := q.queue[0]
	q.queue = q.queue[1:]
	q.running++
	return id, nil
}

// TestRacingAdmitsCatchesOverAdmission: the contract's race reports a queue
// that checks and admits in two steps (the negative control).
func TestRacingAdmitsCatchesOverAdmission(t *testing.T) {
	q := &checkThenAct{JobStore: exporttest.NewJobStore()}
	q.checked.Add(12)
	for i := 0; i < 12; i++ {
		q.queue = append(q.queue, fmt.Sprintf("j%02d", i))
	}
	got, err := exporttest.RacingAdmits(context.Background(), q, 12, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) <= 3 {
		t.Fatalf("a check-then-act queue admitted %v: the race cannot catch over-admission", got)
	}
}
