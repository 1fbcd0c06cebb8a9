package boltstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bulkfhir/bulkfhir/shared/boltstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

func fill(t *testing.T, path string, n int) {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := 0; i < n; i++ {
		j := &export.Job{ID: fmt.Sprintf("job%04d", i), Owner: "c", Status: export.StatusAccepted, RequestURL: strings.Repeat("x", 500),
			CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
		if err := s.Create(context.Background(), j); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
}

func TestOneBadRecordIsSkippedAndReported(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jobs.db")
	fill(t, path, 3)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("jobs")).Put([]byte("job0001"), []byte("{not json")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	live, err := s.Live(context.Background())
	if err != nil {
		t.Fatalf("Live with one bad record: %v", err)
	}
	if len(live) != 2 {
		t.Errorf("live = %v, want the two good jobs", live)
	}
	if got := s.Skipped(); len(got) != 1 || got[0] != "job0001" {
		t.Errorf("skipped = %v, want [job0001]", got)
	}
}

func TestDamagedFileIsRefusedThenRepaired(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"garbage pages", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			junk := []byte(strings.Repeat("\xff\x13\x37\x00", 1024))
			for off := int64(2 * 4096); off+4096 <= st.Size(); off += 3 * 4096 {
				f.WriteAt(junk, off)
			}
		}},
		{"one torn page", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			// Overwrite the header of a leaf page of jobs (the 500-byte
			// request URLs). A page holding the marker may be a free page
			// (an old copy), so tear them one at a time until the store
			// notices: then exactly one reachable page is torn.
			buf := make([]byte, 4096)
			for off := int64(2 * 4096); off < st.Size(); off += 4096 {
				f.ReadAt(buf, off)
				if !strings.Contains(string(buf), strings.Repeat("x", 500)) {
					continue
				}
				f.WriteAt([]byte(strings.Repeat("\xff", 16)), off)
				s, err := boltstore.Open(path)
				if err != nil {
					return
				}
				s.Close()
			}
			t.Fatal("no reachable leaf page found")
		}},
		{"not a database", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("not bolt ", 2000)), 0o600)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jobs.db")
			fill(t, path, 200)
			tc.damage(t, path)
			_, err := boltstore.Open(path)
			var damaged *boltstore.ErrDamaged
			if !errors.As(err, &damaged) || !strings.Contains(err.Error(), "--repair") {
				t.Fatalf("open damaged = %v, want ErrDamaged naming --repair", err)
			}
			rep, err := boltstore.Repair(path)
			if err != nil {
				t.Fatalf("repair: %v", err)
			}
			if rep.MovedTo == "" {
				t.Fatal("repair left the damaged file in place")
			}
			if _, err := os.Stat(rep.MovedTo); err != nil {
				t.Errorf("damaged file not kept aside: %v", err)
			}
			s := open(t, path)
			live, err := s.Live(context.Background())
			if err != nil || len(live) != rep.Kept {
				t.Errorf("after repair: %d live, %v; report %+v", len(live), err, rep)
			}
			t.Logf("repair kept %d, lost %d", rep.Kept, rep.Lost)
			if tc.name == "one torn page" && rep.Kept == 0 {
				t.Errorf("one torn page lost every job: %+v", rep)
			}
		})
	}
	// A sound file is left alone.
	path := filepath.Join(t.TempDir(), "jobs.db")
	fill(t, path, 5)
	if rep, err := boltstore.Repair(path); err != nil || rep.MovedTo != "" {
		t.Errorf("repair of a sound store = %+v, %v", rep, err)
	}
}
