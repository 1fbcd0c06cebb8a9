package boltstore

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

var (
	// queueBucket holds the waiting jobs: export.QueueKey → job id.
	queueBucket = []byte("queue")
	// admittedBucket holds the jobs given a running place: job id → nil.
	// A place is held while its job is live.
	admittedBucket = []byte("admitted")
)

var _ export.Queue = (*Store)(nil)

// update runs fn in a read-write transaction with the queue's buckets.
func (s *Store) queueUpdate(fn func(tx *bolt.Tx, queue, admitted *bolt.Bucket) error) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		q, err := tx.CreateBucketIfNotExists(queueBucket)
		if err != nil {
			return err
		}
		a, err := tx.CreateBucketIfNotExists(admittedBucket)
		if err != nil {
			return err
		}
		return fn(tx, q, a)
	})
}

// Enqueue implements export.Queue.
func (s *Store) Enqueue(_ context.Context, j *export.Job) error {
	return s.queueUpdate(func(_ *bolt.Tx, q, _ *bolt.Bucket) error {
		return q.Put([]byte(export.QueueKey(j)), []byte(j.ID))
	})
}

// Remove implements export.Queue.
func (s *Store) Remove(_ context.Context, j *export.Job) error {
	return s.queueUpdate(func(_ *bolt.Tx, q, _ *bolt.Bucket) error {
		return q.Delete([]byte(export.QueueKey(j)))
	})
}

// Ahead implements export.Queue.
func (s *Store) Ahead(_ context.Context, j *export.Job) (ahead int, waiting bool, err error) {
	mine := []byte(export.QueueKey(j))
	err = s.db.View(func(tx *bolt.Tx) error {
		q := tx.Bucket(queueBucket)
		if q == nil || q.Get(mine) == nil {
			return nil
		}
		waiting = true
		c := q.Cursor()
		for k, _ := c.First(); k != nil && string(k) < string(mine); k, _ = c.Next() {
			ahead++
		}
		return nil
	})
	return ahead, waiting, err
}

// AdmitNext implements export.Queue: the live admitted jobs are counted
// and the head of the queue admitted in one transaction.
func (s *Store) AdmitNext(_ context.Context, maxRunning int) (string, error) {
	var admittedID string
	err := s.queueUpdate(func(tx *bolt.Tx, q, a *bolt.Bucket) error {
		running := 0
		var done [][]byte
		if err := a.ForEach(func(k, _ []byte) error {
			if j, err := getJob(tx, string(k)); err == nil && j.Status.Live() {
				running++
			} else {
				done = append(done, k)
			}
			return nil
		}); err != nil {
			return err
		}
		for _, k := range done {
			if err := a.Delete(k); err != nil {
				return err
			}
		}
		c := q.Cursor()
		for k, v := c.First(); k != nil && running < maxRunning; k, v = c.First() {
			id := string(v)
			if err := c.Delete(); err != nil {
				return err
			}
			if j, err := getJob(tx, id); err != nil || j.Status != export.StatusAccepted {
				continue // cancelled or gone while it waited
			}
			admittedID = id
			return a.Put([]byte(id), nil)
		}
		return nil
	})
	return admittedID, err
}

// Admitted implements export.Queue.
func (s *Store) Admitted(_ context.Context) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		a := tx.Bucket(admittedBucket)
		if a == nil {
			return nil
		}
		return a.ForEach(func(k, _ []byte) error {
			if j, err := getJob(tx, string(k)); err == nil && j.Status.Live() {
				ids = append(ids, string(k))
			}
			return nil
		})
	})
	return ids, err
}

// Waiting implements export.Queue.
func (s *Store) Waiting(_ context.Context) (n int, oldest time.Time, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		q := tx.Bucket(queueBucket)
		if q == nil {
			return nil
		}
		n = q.Stats().KeyN
		if _, v := q.Cursor().First(); v != nil {
			if j, err := getJob(tx, string(v)); err == nil {
				oldest = j.CreatedAt
			}
		}
		return nil
	})
	return n, oldest, err
}

// Queued reports whether a job waits in the queue (start-up resumes only
// the jobs that do not).
func (s *Store) Queued(ctx context.Context, j *export.Job) (bool, error) {
	_, waiting, err := s.Ahead(ctx, j)
	return waiting, err
}
