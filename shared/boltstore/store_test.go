package boltstore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

func open(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestContract(t *testing.T) {
	exporttest.JobStoreContract(t, func(t *testing.T) export.JobStore {
		return open(t, filepath.Join(t.TempDir(), "jobs.db"))
	})
}

func TestCappedCreator(t *testing.T) {
	exporttest.CappedCreatorContract(t, func(t *testing.T) export.JobStore {
		return open(t, filepath.Join(t.TempDir(), "jobs.db"))
	})
}

func TestSurvivesReopenAndExpires(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "jobs.db")
	s := open(t, path)
	now := time.Now().UTC()
	s.Create(ctx, &export.Job{ID: "live", Owner: "c", Status: export.StatusAccepted, ExpiresAt: now.Add(time.Hour)})
	s.Create(ctx, &export.Job{ID: "old", Owner: "c", Status: export.StatusCompleted, ExpiresAt: now.Add(-time.Minute)})
	s.PutFile(ctx, "old", export.File{Key: "old/x", Count: 1})
	s.Close()

	s = open(t, path)
	live, err := s.Live(ctx)
	if err != nil || len(live) != 1 || live[0] != "live" {
		t.Errorf("live = %v, %v", live, err)
	}
	expired, _ := s.Expired(ctx, now)
	if len(expired) != 1 || expired[0] != "old" {
		t.Fatalf("expired = %v", expired)
	}
	if err := s.Delete(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "old"); err != export.ErrJobNotFound {
		t.Errorf("get deleted = %v", err)
	}
	if files, _ := s.Files(ctx, "old"); len(files) != 0 {
		t.Errorf("files of deleted job = %v", files)
	}
}

func TestQueue(t *testing.T) {
	exporttest.QueueContract(t, func(t *testing.T) export.JobStore {
		return open(t, filepath.Join(t.TempDir(), "jobs.db"))
	})
}
