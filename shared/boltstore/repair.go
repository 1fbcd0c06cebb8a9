package boltstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// ErrDamaged is Open's error for a file that is not a sound bbolt
// database (torn or overwritten pages). Repair moves it aside and keeps
// what can still be read.
type ErrDamaged struct {
	Path   string
	Reason string
}

func (e *ErrDamaged) Error() string {
	return fmt.Sprintf("the job store %s is damaged (%s); run bulkfhir serve with --repair to move it aside and keep the job records that can still be read", e.Path, e.Reason)
}

// preflight checks an existing store file before it is opened for
// writing. Opening for writing rebuilds the freelist by walking every page,
// and bbolt panics in a goroutine of its own on a damaged page there, which
// kills the process. So the file is first opened read-only (no freelist
// walk), every key of every bucket is read in this goroutine (where a
// panic is recovered) and bbolt's own check runs; any problem is an
// *ErrDamaged.
func preflight(path string) (err error) {
	if st, serr := os.Stat(path); serr != nil || st.Size() == 0 {
		return nil // a new store
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, berrors.ErrInvalid) || errors.Is(err, berrors.ErrChecksum) || errors.Is(err, berrors.ErrVersionMismatch) {
		return &ErrDamaged{Path: path, Reason: err.Error()}
	}
	if err != nil {
		return fmt.Errorf("open job store %s: %w", path, err)
	}
	defer func() {
		if p := recover(); p != nil {
			err = &ErrDamaged{Path: path, Reason: fmt.Sprint(p)}
		}
		db.Close() // the read transaction was rolled back by View
	}()
	return db.View(func(tx *bolt.Tx) error {
		var walk func(b *bolt.Bucket, depth int) error
		walk = func(b *bolt.Bucket, depth int) error {
			if depth > 4 {
				return &ErrDamaged{Path: path, Reason: "buckets nested deeper than this store makes"}
			}
			return b.ForEach(func(k, v []byte) error {
				if v == nil {
					if child := b.Bucket(k); child != nil {
						return walk(child, depth+1)
					}
				}
				return nil
			})
		}
		if err := tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b, 1) }); err != nil {
			return err
		}
		var first error
		for e := range tx.Check() { // drained: the checker stops when read out
			if first == nil {
				first = &ErrDamaged{Path: path, Reason: e.Error()}
			}
		}
		return first
	})
}

func (s *Store) skip(key []byte) {
	s.skipMu.Lock()
	s.skipped[string(key)] = true
	s.skipMu.Unlock()
}

// Skipped returns the keys of job records that could not be decoded and
// were left out of recovery, listing and expiry.
func (s *Store) Skipped() []string {
	s.skipMu.Lock()
	defer s.skipMu.Unlock()
	out := make([]string, 0, len(s.skipped))
	for k := range s.skipped {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// RepairReport says what Repair did.
type RepairReport struct {
	// MovedTo is where the damaged file now is ("" if it was sound).
	MovedTo string
	// Kept and Lost count the job records copied and those that could not
	// be read.
	Kept, Lost int
}

// Repair checks the store at path. A sound file is left alone. A damaged
// one is renamed to path.damaged-<unix time> and a new store is made at
// path with every job record (and its file records) that can still be
// read from it; jobs that were live resume, others keep their manifests.
// Run it while no server uses the file.
func Repair(path string) (rep RepairReport, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return rep, nil
	}
	s, err := Open(path)
	if err == nil {
		return rep, s.Close()
	}
	var damaged *ErrDamaged
	if !errors.As(err, &damaged) {
		return rep, err
	}
	rep.MovedTo = fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
	if err := os.Rename(path, rep.MovedTo); err != nil {
		return rep, fmt.Errorf("repair: move the damaged store aside: %w", err)
	}
	fresh, err := Open(path)
	if err != nil {
		return rep, fmt.Errorf("repair: new store: %w", err)
	}
	defer fresh.Close()
	rep.Kept, rep.Lost = salvage(rep.MovedTo, fresh)
	return rep, nil
}

// salvage copies what can be read from the damaged file into dst, one job
// at a time, so a page that panics loses only what is on it.
func salvage(path string, dst *Store) (kept, lost int) {
	old, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, 0
	}
	defer old.Close()
	// A torn page stops any walk across it, so the job ids are gathered
	// from both ends of the jobs bucket and from the other buckets that
	// name jobs (file records, the live index).
	seen := map[string]bool{}
	var keys []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	gather := func(fn func(tx *bolt.Tx)) {
		defer func() { _ = recover() }()
		_ = old.View(func(tx *bolt.Tx) error { fn(tx); return nil })
	}
	gather(func(tx *bolt.Tx) {
		c := tx.Bucket(jobsBucket).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			add(string(k))
		}
	})
	gather(func(tx *bolt.Tx) {
		c := tx.Bucket(jobsBucket).Cursor()
		for k, _ := c.Last(); k != nil; k, _ = c.Prev() {
			add(string(k))
		}
	})
	gather(func(tx *bolt.Tx) {
		c := tx.Bucket(filesBucket).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			add(string(k))
		}
	})
	gather(func(tx *bolt.Tx) {
		c := tx.Bucket(liveBucket).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if _, id, ok := bytes.Cut(k, []byte{0}); ok {
				add(string(id))
			}
		}
	})
	sort.Strings(keys)
	for _, k := range keys {
		if copyJob(old, dst, k) {
			kept++
		} else {
			lost++
		}
	}
	return kept, lost
}

func copyJob(old *bolt.DB, dst *Store, id string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	var job export.Job
	var files [][2][]byte
	err := old.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(jobsBucket).Get([]byte(id))
		if err := json.Unmarshal(raw, &job); err != nil || job.ID != id {
			return errors.New("undecodable")
		}
		if fb := tx.Bucket(filesBucket); fb != nil {
			if b := fb.Bucket([]byte(id)); b != nil {
				return b.ForEach(func(k, v []byte) error {
					files = append(files, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v...)})
					return nil
				})
			}
		}
		return nil
	})
	if err != nil {
		return false
	}
	return dst.db.Update(func(tx *bolt.Tx) error {
		if err := putJob(tx, &job, false); err != nil {
			return err
		}
		b, err := tx.Bucket(filesBucket).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		for _, f := range files {
			if err := b.Put(f[0], f[1]); err != nil {
				return err
			}
		}
		return nil
	}) == nil
}
