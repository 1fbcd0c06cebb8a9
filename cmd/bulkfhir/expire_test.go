package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

// TestExpireJobs: the embedded janitor removes an ended job's files and
// record once its Expires has passed, not at it, and never a live job's.
func TestExpireJobs(t *testing.T) {
	dir := t.TempDir()
	jobs, err := boltstore.Open(filepath.Join(dir, "jobs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer jobs.Close()
	files, err := dirstore.Open(filepath.Join(dir, "files"), filepath.Join(dir, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Second)
	add := func(status export.Status) string {
		t.Helper()
		id := export.NewJobID()
		if err := jobs.Create(ctx, &export.Job{ID: id, Owner: "c", Status: export.StatusAccepted, Request: bulkdata.Request{Level: bulkdata.LevelSystem},
			CreatedAt: t0, UpdatedAt: t0, TransactionTime: t0, ExpiresAt: t0}); err != nil {
			t.Fatal(err)
		}
		if status != export.StatusAccepted {
			if _, err := jobs.Transition(ctx, id, export.Transition{From: []export.Status{export.StatusAccepted}, To: status}); err != nil {
				t.Fatal(err)
			}
		}
		w, _ := files.Create(ctx, id+"/Patient.0000.ndjson")
		w.Write([]byte("{}\n"))
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		return id
	}
	done, failed, live := add(export.StatusCompleted), add(export.StatusFailed), add(export.StatusInProgress)
	exists := func(id string) bool {
		_, err := os.Stat(filepath.Join(dir, "files", id))
		_, gerr := jobs.Get(ctx, id)
		if (err == nil) != (gerr == nil) {
			t.Fatalf("%s: files %v, record %v", id, err, gerr)
		}
		return err == nil
	}
	log := slog.New(slog.DiscardHandler)
	expireJobs(ctx, jobs, files, t0, log)
	if !exists(done) || !exists(failed) || !exists(live) {
		t.Fatal("deleted at Expires")
	}
	expireJobs(ctx, jobs, files, t0.Add(time.Second), log)
	if exists(done) || exists(failed) {
		t.Error("ended jobs kept after Expires")
	}
	expireJobs(ctx, jobs, files, t0.Add(72*time.Hour), log)
	if !exists(live) {
		t.Error("a live job was deleted")
	}
}
