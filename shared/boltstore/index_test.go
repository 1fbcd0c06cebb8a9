package boltstore

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// TestLiveIndexIsBuiltForOlderStores: a store written before the live index
// existed gets it on open, so CountLive stays right.
func TestLiveIndexIsBuiltForOlderStores(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, st := range []export.Status{export.StatusAccepted, export.StatusInProgress, export.StatusCompleted} {
		if err := s.Create(ctx, &export.Job{ID: fmt.Sprint("j", i), Owner: "a", Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(liveBucket) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n, err := s.CountLive(ctx, "a"); err != nil || n != 2 {
		t.Fatalf("CountLive = %d, %v; want 2", n, err)
	}
	if _, err := s.Transition(ctx, "j0", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusFailed}); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.CountLive(ctx, "a"); n != 1 {
		t.Fatalf("CountLive after a job failed = %d, want 1", n)
	}
}
