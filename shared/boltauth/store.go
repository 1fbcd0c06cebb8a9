// Package boltauth holds the embedded authorization server's state in a
// bbolt file of its own (STATE/auth.db): the registered Backend Services
// clients and the jti replay cache. The file is opened for each operation
// and closed again, so `bulkfhir clients add` can change the registry of
// a running server, which sees the change on its next token request.
package boltauth

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

var (
	clientsBucket = []byte("clients")
	jtiBucket     = []byte("jti")
)

// Store is the client registry and replay cache on one bolt file.
type Store struct {
	path string
	// mu serializes this process's opens (bolt's file lock does so across
	// processes).
	mu sync.Mutex
}

var (
	_ smartauth.ClientStore = (*Store)(nil)
	_ smartauth.ReplayCache = (*Store)(nil)
)

// New returns the store at path (created on first write).
func New(path string) *Store { return &Store{path: path} }

func (s *Store) with(write bool, fn func(tx *bolt.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, err := bolt.Open(s.path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return fmt.Errorf("open auth store %s: %w", s.path, err)
	}
	defer db.Close()
	if !write {
		return db.View(fn)
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{clientsBucket, jtiBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return fn(tx)
	})
}

// Client implements smartauth.ClientStore.
func (s *Store) Client(_ context.Context, id string) (*smartauth.Client, error) {
	var c *smartauth.Client
	err := s.with(false, func(tx *bolt.Tx) error {
		b := tx.Bucket(clientsBucket)
		if b == nil {
			return nil
		}
		raw := b.Get([]byte(id))
		if raw == nil {
			return nil
		}
		c = &smartauth.Client{}
		return json.Unmarshal(raw, c)
	})
	if err != nil {
		return nil, fmt.Errorf("client %q: %w", id, err)
	}
	if c == nil {
		return nil, fmt.Errorf("client %q: %w", id, smartauth.ErrUnknownClient)
	}
	return c, nil
}

// Put registers c (validated), replacing a client of the same id.
func (s *Store) Put(_ context.Context, c *smartauth.Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return s.with(true, func(tx *bolt.Tx) error { return tx.Bucket(clientsBucket).Put([]byte(c.ClientID), raw) })
}

// Delete removes a client; removing an unknown one is ErrUnknownClient.
func (s *Store) Delete(_ context.Context, id string) error {
	return s.with(true, func(tx *bolt.Tx) error {
		b := tx.Bucket(clientsBucket)
		if b.Get([]byte(id)) == nil {
			return fmt.Errorf("client %q: %w", id, smartauth.ErrUnknownClient)
		}
		return b.Delete([]byte(id))
	})
}

// List returns the registered clients by id.
func (s *Store) List(_ context.Context) ([]*smartauth.Client, error) {
	var out []*smartauth.Client
	err := s.with(false, func(tx *bolt.Tx) error {
		b := tx.Bucket(clientsBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			c := &smartauth.Client{}
			if err := json.Unmarshal(v, c); err != nil {
				return err
			}
			out = append(out, c)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out, err
}

// Claim implements smartauth.ReplayCache. Expired entries are purged in the
// same transaction, so the cache stays as small as the live assertions.
func (s *Store) Claim(_ context.Context, key string, until time.Time) error {
	now := time.Now()
	return s.with(true, func(tx *bolt.Tx) error {
		b := tx.Bucket(jtiBucket)
		if v := b.Get([]byte(key)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now.UnixNano() {
			return fmt.Errorf("%w", smartauth.ErrReplay)
		}
		var expired [][]byte
		_ = b.ForEach(func(k, v []byte) error {
			if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= now.UnixNano() {
				expired = append(expired, append([]byte(nil), k...))
			}
			return nil
		})
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, uint64(until.UnixNano()))
		return b.Put([]byte(key), v)
	})
}
