package exporttest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// JobStoreContract checks the export.JobStore contract against a fresh
// store from newStore: conditional transitions, no resurrection after
// cancel, progress only while in progress, idempotent file records, and
// no lost update under concurrent transitions. Every adapter runs it.
func JobStoreContract(t *testing.T, newStore func(t *testing.T) export.JobStore) {
	ctx := context.Background()
	newJob := func(id, owner string) *export.Job {
		now := time.Now().UTC().Truncate(time.Millisecond)
		return &export.Job{ID: id, Owner: owner, Status: export.StatusAccepted, TransactionTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	t.Run("create and get", func(t *testing.T) {
		s := newStore(t)
		if err := s.Create(ctx, newJob("a", "c1")); err != nil {
			t.Fatal(err)
		}
		if err := s.Create(ctx, newJob("a", "c1")); !errors.Is(err, export.ErrJobExists) {
			t.Errorf("second create = %v, want ErrJobExists", err)
		}
		j, err := s.Get(ctx, "a")
		if err != nil || j.Owner != "c1" || j.Status != export.StatusAccepted {
			t.Errorf("get = %+v, %v", j, err)
		}
		if _, err := s.Get(ctx, "nope"); !errors.Is(err, export.ErrJobNotFound) {
			t.Errorf("get missing = %v, want ErrJobNotFound", err)
		}
	})
	t.Run("transitions are conditional", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		plan := &export.PlanRef{Key: "a/plan.json", Units: 3, Types: []string{"Patient"}}
		j, err := s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress, Plan: plan})
		if err != nil || j.Status != export.StatusInProgress || j.Plan == nil || j.Plan.Units != 3 || j.Plan.Key != plan.Key {
			t.Fatalf("start = %+v, %v", j, err)
		}
		if j, _ := s.Get(ctx, "a"); j.Plan == nil || j.Plan.Units != 3 || len(j.Plan.Types) != 1 {
			t.Errorf("stored plan = %+v", j.Plan)
		}
		_, err = s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress})
		var c *export.ConflictError
		if !errors.As(err, &c) || c.Current != export.StatusInProgress {
			t.Errorf("repeated start = %v, want conflict with in-progress", err)
		}
		if _, err := s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCancelled}); err != nil {
			t.Fatal(err)
		}
		for _, to := range []export.Status{export.StatusCompleted, export.StatusFailed, export.StatusInProgress} {
			if _, err := s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted, export.StatusInProgress}, To: to}); !export.IsConflict(err) {
				t.Errorf("cancelled → %s = %v, want conflict", to, err)
			}
		}
		if _, err := s.Transition(ctx, "nope", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusFailed}); !errors.Is(err, export.ErrJobNotFound) {
			t.Errorf("transition missing = %v", err)
		}
	})
	t.Run("progress only while in progress", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		p := export.UnitProgress{Resources: 5, Done: true, Cursor: &export.Cursor{Source: "10", Seq: 1, Resources: 5}}
		if err := s.SaveProgress(ctx, "a", "u", p); !export.IsConflict(err) {
			t.Errorf("progress on accepted job = %v, want conflict", err)
		}
		s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress})
		if err := s.SaveProgress(ctx, "a", "u", p); err != nil {
			t.Fatal(err)
		}
		if err := s.SaveProgress(ctx, "a", "u", p); err != nil {
			t.Fatal(err)
		}
		prog, err := s.Progress(ctx, "a")
		if got := prog["u"]; err != nil || len(prog) != 1 || got.Resources != 5 || !got.Done || got.Cursor == nil || got.Cursor.Source != "10" {
			t.Errorf("progress = %+v, %v (saving twice must set, not add)", prog, err)
		}
		if other, err := s.Progress(ctx, "other"); err != nil || len(other) != 0 {
			t.Errorf("progress of another job = %+v, %v", other, err)
		}
		s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusInProgress}, To: export.StatusCancelled})
		if err := s.SaveProgress(ctx, "a", "u2", p); !export.IsConflict(err) {
			t.Errorf("progress on cancelled job = %v, want conflict", err)
		}
		if prog, _ := s.Progress(ctx, "a"); len(prog) != 1 {
			t.Errorf("a refused progress was stored: %+v", prog)
		}
	})
	t.Run("many units and files are each their own record", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress,
			Plan: &export.PlanRef{Key: "a/plan.json", Units: manyUnits}})
		before, _ := s.Get(ctx, "a")
		var wg sync.WaitGroup
		errs := make(chan error, 2*manyUnits)
		for i := 0; i < manyUnits; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				unit := fmt.Sprintf("Observation.%04d", i)
				// A long cursor: what one unit keeps must not add up in the job.
				cur := &export.Cursor{Source: strings.Repeat("c", 2000), Seq: 1, Resources: int64(i)}
				errs <- s.SaveProgress(ctx, "a", unit, export.UnitProgress{Resources: int64(i), Done: true, Cursor: cur})
				errs <- s.PutFile(ctx, "a", export.File{Key: "a/" + unit + "/Observation.0000.ndjson", Kind: export.KindOutput, Type: "Observation", Count: int64(i), Unit: unit})
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		prog, err := s.Progress(ctx, "a")
		if err != nil || len(prog) != manyUnits {
			t.Fatalf("progress has %d units, %v; want %d", len(prog), err, manyUnits)
		}
		if done, res, _ := export.Totals(prog); done != manyUnits || res != int64(manyUnits*(manyUnits-1)/2) {
			t.Errorf("totals = %d done, %d resources", done, res)
		}
		files, err := s.Files(ctx, "a")
		if err != nil || len(files) != manyUnits {
			t.Errorf("files = %d, %v; want %d", len(files), err, manyUnits)
		}
		after, _ := s.Get(ctx, "a")
		if b, a := mustJSON(t, before), mustJSON(t, after); len(a) > len(b)+64 {
			t.Errorf("the job record grew from %d to %d bytes with its units", len(b), len(a))
		}
	})
	t.Run("files page in key order", func(t *testing.T) {
		s := newStore(t)
		p, ok := s.(export.FilePager)
		if !ok {
			t.Skip("the store reads files only as a whole")
		}
		s.Create(ctx, newJob("a", "c1"))
		s.Create(ctx, newJob("b", "c1"))
		s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress})
		var want []string
		for i := 59; i >= 0; i-- { // written out of order
			key := fmt.Sprintf("a/Patient.%04d/Patient.0000.ndjson", i)
			want = append([]string{key}, want...)
			if err := s.PutFile(ctx, "a", export.File{Key: key, Kind: export.KindOutput, Type: "Patient", Count: 1}); err != nil {
				t.Fatal(err)
			}
		}
		s.PutFile(ctx, "b", export.File{Key: "b/Patient.0000/Patient.0000.ndjson", Kind: export.KindOutput})
		var got []string
		after := "a/"
		for {
			page, err := p.FilesAfter(ctx, "a", after, 7)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > 7 {
				t.Fatalf("page of %d files, limit 7", len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, f := range page {
				got = append(got, f.Key)
			}
			after = page[len(page)-1].Key
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("paged files = %v, want %v", got, want)
		}
		// A cursor that names no file starts after where it would sort.
		page, err := p.FilesAfter(ctx, "a", "a/Patient.0010/Z", 1)
		if err != nil || len(page) != 1 || page[0].Key != want[11] {
			t.Errorf("after a missing key = %+v, %v; want %s", page, err, want[11])
		}
	})
	t.Run("files only while the job is live", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		// Plan records lenient warnings before the job starts.
		if err := s.PutFile(ctx, "a", export.File{Key: "a/request/errors.ndjson", Kind: export.KindError}); err != nil {
			t.Fatalf("file of an accepted job = %v", err)
		}
		s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusCancelled})
		if err := s.PutFile(ctx, "a", export.File{Key: "a/u/x.ndjson", Kind: export.KindOutput}); !export.IsConflict(err) {
			t.Errorf("file of a cancelled job = %v, want conflict", err)
		}
		if files, _ := s.Files(ctx, "a"); len(files) != 1 {
			t.Errorf("files = %+v, want only the one recorded while live", files)
		}
	})
	t.Run("files are idempotent by key", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress})
		f := export.File{Key: "a/u/Patient.0000.ndjson", Kind: export.KindOutput, Type: "Patient", Count: 3}
		s.PutFile(ctx, "a", f)
		f.Count = 4
		s.PutFile(ctx, "a", f)
		files, err := s.Files(ctx, "a")
		if err != nil || len(files) != 1 || files[0].Count != 4 {
			t.Errorf("files = %+v, %v", files, err)
		}
		if files, _ := s.Files(ctx, "other"); len(files) != 0 {
			t.Errorf("files of another job = %+v", files)
		}
	})
	t.Run("live jobs per owner", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		s.Create(ctx, newJob("b", "c1"))
		s.Create(ctx, newJob("c", "c2"))
		s.Transition(ctx, "b", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusFailed})
		if n, err := s.CountLive(ctx, "c1"); err != nil || n != 1 {
			t.Errorf("live(c1) = %d, %v, want 1", n, err)
		}
	})
	t.Run("no lost update under concurrent transitions", func(t *testing.T) {
		s := newStore(t)
		s.Create(ctx, newJob("a", "c1"))
		var wg sync.WaitGroup
		wins := make(chan export.Status, 8)
		for i := 0; i < 8; i++ {
			to := export.StatusCancelled
			if i%2 == 0 {
				to = export.StatusInProgress
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Transition(ctx, "a", export.Transition{From: []export.Status{export.StatusAccepted}, To: to}); err == nil {
					wins <- to
				}
			}()
		}
		wg.Wait()
		close(wins)
		var won []export.Status
		for w := range wins {
			won = append(won, w)
		}
		j, _ := s.Get(ctx, "a")
		if len(won) != 1 || j.Status != won[0] {
			t.Errorf("winners = %v, final status %s: want exactly one", won, j.Status)
		}
	})
}

// manyUnits is how many units and files the contract writes to one job:
// more than one page of a paginated store read (stores run the suite with
// small pages).
const manyUnits = 120

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// CappedCreatorContract checks export.CappedCreator: 50 concurrent
// creations for one owner with a cap of 5 create exactly 5 jobs, other
// owners are not counted, and a job that leaves the live states frees its
// place at once.
func CappedCreatorContract(t *testing.T, newStore func(t *testing.T) export.JobStore) {
	ctx := context.Background()
	const maxLive, tries = 5, 50
	newJob := func(id, owner string) *export.Job {
		now := time.Now().UTC().Truncate(time.Millisecond)
		return &export.Job{ID: id, Owner: owner, Status: export.StatusAccepted, TransactionTime: now, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	s := newStore(t)
	c, ok := s.(export.CappedCreator)
	if !ok {
		t.Fatalf("%T does not implement export.CappedCreator", s)
	}
	if err := c.CreateCapped(ctx, newJob("other-0", "other"), maxLive); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var created []string
	refused := 0
	for i := 0; i < tries; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := "j" + strconv.Itoa(i)
			err := c.CreateCapped(ctx, newJob(id, "c1"), maxLive)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created = append(created, id)
			case errors.Is(err, export.ErrTooManyLive):
				refused++
			default:
				t.Errorf("create %s: %v", id, err)
			}
		}(i)
	}
	wg.Wait()
	if len(created) != maxLive || refused != tries-maxLive {
		t.Fatalf("created %d, refused %d; want %d and %d", len(created), refused, maxLive, tries-maxLive)
	}
	if n, err := s.CountLive(ctx, "c1"); err != nil || n != maxLive {
		t.Errorf("CountLive = %d, %v; want %d", n, err, maxLive)
	}
	if err := c.CreateCapped(ctx, newJob("again", "c1"), maxLive); !errors.Is(err, export.ErrTooManyLive) {
		t.Errorf("create at the cap = %v, want ErrTooManyLive", err)
	}
	if err := c.CreateCapped(ctx, newJob(created[0], "c1"), maxLive+1); !errors.Is(err, export.ErrJobExists) {
		t.Errorf("create of an existing id = %v, want ErrJobExists", err)
	}
	// Cancelling one frees its place for the very next kick-off.
	if _, err := s.Transition(ctx, created[0], export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusCancelled}); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateCapped(ctx, newJob("after-cancel", "c1"), maxLive); err != nil {
		t.Errorf("create after a cancel = %v, want success", err)
	}
	if err := c.CreateCapped(ctx, newJob("over", "c1"), maxLive); !errors.Is(err, export.ErrTooManyLive) {
		t.Errorf("create over the cap after the cancel = %v, want ErrTooManyLive", err)
	}
}
