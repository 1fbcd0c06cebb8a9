// Package boltstore is the embedded JobStore: job records, unit progress
// records and file records in one bbolt file, each unit and file a record
// of its own beside the job (the model of the DynamoDB store), written in
// the same transaction as a check of the job's status. Every change runs in a bbolt read-write transaction, so
// conditional transitions are atomic and survive a crash of the process.
// Concurrent changes are batched into one transaction (one fsync), and an
// index of live jobs per owner keeps kick-off's concurrency check from
// reading every job.
package boltstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

var (
	jobsBucket  = []byte("jobs")
	filesBucket = []byte("files")
	// unitsBucket holds a bucket per job: unit id → progress.
	unitsBucket = []byte("units")
	// liveBucket indexes accepted and in-progress jobs: owner NUL id.
	liveBucket = []byte("live")
)

// Store is a JobStore on a bbolt file.
type Store struct {
	db  *bolt.DB
	now func() time.Time
	// skipped are the keys of job records that could not be decoded;
	// they are left out (see Skipped).
	skipMu  sync.Mutex
	skipped map[string]bool
}

var (
	_ export.JobStore      = (*Store)(nil)
	_ export.CappedCreator = (*Store)(nil)
)

// Open opens (or creates) the store at path. It fails after a second if
// another process holds the file, and with an *ErrDamaged if the file is
// not a sound bbolt database (see Repair).
func Open(path string) (*Store, error) {
	if err := preflight(path); err != nil {
		return nil, err
	}
	// The freelist is rebuilt on open instead of written on every commit.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open job store %s: %w", path, err)
	}
	// Writers that arrive together share a commit; a lone writer waits at
	// most this long for company.
	db.MaxBatchDelay = 500 * time.Microsecond
	st := &Store{db: db, now: time.Now, skipped: map[string]bool{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{jobsBucket, filesBucket, unitsBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		if tx.Bucket(liveBucket) != nil {
			return nil
		}
		// A store from before the index: build it.
		live, err := tx.CreateBucket(liveBucket)
		if err != nil {
			return err
		}
		return tx.Bucket(jobsBucket).ForEach(func(k, v []byte) error {
			var j export.Job
			if err := json.Unmarshal(v, &j); err != nil {
				st.skip(k)
				return nil
			}
			if j.Status.Live() {
				return live.Put(liveKey(j.Owner, j.ID), nil)
			}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init job store: %w", err)
	}
	return st, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

func getJob(tx *bolt.Tx, id string) (*export.Job, error) {
	raw := tx.Bucket(jobsBucket).Get([]byte(id))
	if raw == nil {
		return nil, export.ErrJobNotFound
	}
	var j export.Job
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("decode job %s: %w", id, err)
	}
	return &j, nil
}

func liveKey(owner, id string) []byte { return []byte(owner + "\x00" + id) }

// putJob stores j; wasLive says whether the stored version was live, so the
// live index follows status changes.
func putJob(tx *bolt.Tx, j *export.Job, wasLive bool) error {
	raw, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", j.ID, err)
	}
	switch live := j.Status.Live(); {
	case live && !wasLive:
		err = tx.Bucket(liveBucket).Put(liveKey(j.Owner, j.ID), nil)
	case !live && wasLive:
		err = tx.Bucket(liveBucket).Delete(liveKey(j.Owner, j.ID))
	}
	if err != nil {
		return err
	}
	return tx.Bucket(jobsBucket).Put([]byte(j.ID), raw)
}

// Create implements export.JobStore.
func (s *Store) Create(_ context.Context, job *export.Job) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		if tx.Bucket(jobsBucket).Get([]byte(job.ID)) != nil {
			return export.ErrJobExists
		}
		return putJob(tx, job, false)
	})
}

// CreateCapped implements export.CappedCreator: the owner's live jobs are
// counted and the job created in one read-write transaction.
func (s *Store) CreateCapped(_ context.Context, job *export.Job, maxLive int) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		if tx.Bucket(jobsBucket).Get([]byte(job.ID)) != nil {
			return export.ErrJobExists
		}
		if countLive(tx, job.Owner) >= maxLive {
			return export.ErrTooManyLive
		}
		return putJob(tx, job, false)
	})
}

// Get implements export.JobStore.
func (s *Store) Get(_ context.Context, id string) (*export.Job, error) {
	var j *export.Job
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		j, err = getJob(tx, id)
		return err
	})
	return j, err
}

// Transition implements export.JobStore.
func (s *Store) Transition(_ context.Context, id string, t export.Transition) (*export.Job, error) {
	var j *export.Job
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var err error
		if j, err = getJob(tx, id); err != nil {
			return err
		}
		if !t.Allows(j.Status) {
			return &export.ConflictError{JobID: id, Current: j.Status}
		}
		wasLive := j.Status.Live()
		t.Apply(j, s.now().UTC())
		return putJob(tx, j, wasLive)
	})
	if err != nil {
		return nil, err
	}
	return j, nil
}

// SaveProgress implements export.JobStore.
func (s *Store) SaveProgress(_ context.Context, id, unitID string, p export.UnitProgress) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode progress %s: %w", unitID, err)
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		if err := fence(tx, id, export.StatusInProgress); err != nil {
			return err
		}
		b, err := tx.Bucket(unitsBucket).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		return b.Put([]byte(unitID), raw)
	})
}

// fence fails unless job id exists in one of the statuses.
func fence(tx *bolt.Tx, id string, statuses ...export.Status) error {
	j, err := getJob(tx, id)
	if err != nil {
		return err
	}
	for _, st := range statuses {
		if j.Status == st {
			return nil
		}
	}
	return &export.ConflictError{JobID: id, Current: j.Status}
}

// Progress implements export.JobStore.
func (s *Store) Progress(_ context.Context, id string) (map[string]export.UnitProgress, error) {
	out := map[string]export.UnitProgress{}
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(unitsBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var p export.UnitProgress
			if err := json.Unmarshal(v, &p); err != nil {
				return fmt.Errorf("decode progress %s: %w", k, err)
			}
			out[string(k)] = p
			return nil
		})
	})
	return out, err
}

// PutFile implements export.JobStore.
func (s *Store) PutFile(_ context.Context, id string, f export.File) error {
	raw, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode file %s: %w", f.Key, err)
	}
	return s.db.Batch(func(tx *bolt.Tx) error {
		if err := fence(tx, id, export.StatusAccepted, export.StatusInProgress); err != nil {
			return err
		}
		b, err := tx.Bucket(filesBucket).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		return b.Put([]byte(f.Key), raw)
	})
}

// Files implements export.JobStore.
func (s *Store) Files(_ context.Context, id string) ([]export.File, error) {
	var out []export.File
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(filesBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var f export.File
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("decode file %s: %w", k, err)
			}
			out = append(out, f)
			return nil
		})
	})
	return out, err
}

// FilesAfter implements export.FilePager: a cursor over the job's files
// bucket, whose keys are the file keys.
func (s *Store) FilesAfter(_ context.Context, id, after string, limit int) ([]export.File, error) {
	var out []export.File
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(filesBucket).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			var f export.File
			if err := json.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("decode file %s: %w", k, err)
			}
			out = append(out, f)
		}
		return nil
	})
	return out, err
}

// CountLive implements export.JobStore.
func (s *Store) CountLive(_ context.Context, owner string) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		n = countLive(tx, owner)
		return nil
	})
	return n, err
}

func countLive(tx *bolt.Tx, owner string) int {
	n := 0
	prefix := []byte(owner + "\x00")
	c := tx.Bucket(liveBucket).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		n++
	}
	return n
}

// eachJob calls fn for every job record; a record that cannot be decoded
// is skipped and remembered (Skipped), so one bad record never stops
// start-up recovery or the janitor.
func (s *Store) eachJob(fn func(*export.Job)) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(jobsBucket).ForEach(func(k, v []byte) error {
			var j export.Job
			if err := json.Unmarshal(v, &j); err != nil {
				s.skip(k)
				return nil
			}
			fn(&j)
			return nil
		})
	})
}

// Live returns the ids of accepted and in-progress jobs (to resume them
// after a restart).
func (s *Store) Live(_ context.Context) ([]string, error) {
	var ids []string
	err := s.eachJob(func(j *export.Job) {
		if j.Status.Live() {
			ids = append(ids, j.ID)
		}
	})
	return ids, err
}

// Expired returns the ids of jobs whose ExpiresAt has passed.
func (s *Store) Expired(_ context.Context, now time.Time) ([]string, error) {
	var ids []string
	err := s.eachJob(func(j *export.Job) {
		if now.After(j.ExpiresAt) {
			ids = append(ids, j.ID)
		}
	})
	return ids, err
}

// Delete removes a job record and its file records.
func (s *Store) Delete(_ context.Context, id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if j, err := getJob(tx, id); err == nil && j.Status.Live() {
			if err := tx.Bucket(liveBucket).Delete(liveKey(j.Owner, j.ID)); err != nil {
				return err
			}
		}
		if err := tx.Bucket(jobsBucket).Delete([]byte(id)); err != nil {
			return err
		}
		for _, name := range [][]byte{filesBucket, unitsBucket} {
			err := tx.Bucket(name).DeleteBucket([]byte(id))
			if err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
}
