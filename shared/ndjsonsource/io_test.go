package ndjsonsource

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
)

// countingObjects counts lists and opens of another Objects.
type countingObjects struct {
	Objects
	lists, groupOpens atomic.Int32
}

func (c *countingObjects) List(ctx context.Context) ([]Object, error) {
	c.lists.Add(1)
	return c.Objects.List(ctx)
}

func (c *countingObjects) Open(ctx context.Context, name, version string, start, end int64) (io.ReadCloser, error) {
	if name == "Group.ndjson" {
		c.groupOpens.Add(1)
	}
	return c.Objects.Open(ctx, name, version, start, end)
}

// TestChunksDoNotReReadTheSource: after Plan, opening segments (one per
// export chunk) lists nothing, and Group members are read once until the
// Group file changes.
func TestChunksDoNotReReadTheSource(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "Patient.ndjson", `{"resourceType":"Patient","id":"p0"}`, `{"resourceType":"Patient","id":"p1"}`)
	write(t, dir, "Group.ndjson", `{"resourceType":"Group","id":"g","member":[{"entity":{"reference":"Patient/p0"}}]}`)
	objs := &countingObjects{Objects: Dir(dir)}
	s := NewFromObjects(objs, Options{})
	ctx := context.Background()
	q := export.Query{Level: bulkdata.LevelGroup, GroupID: "g"}
	segs, err := s.Plan(ctx, q, "Patient")
	if err != nil || len(segs) != 1 {
		t.Fatalf("plan = %v, %v", segs, err)
	}
	if _, err := s.GroupMembers(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	lists, opens := objs.lists.Load(), objs.groupOpens.Load()
	for i := 0; i < 5; i++ {
		r, err := s.Open(ctx, q, "Patient", segs[0], "")
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
	}
	if n := objs.groupOpens.Load() - opens; n != 0 {
		t.Errorf("5 chunk opens read the Group %d more times, want 0", n)
	}
	if n := objs.lists.Load() - lists; n > 5 {
		t.Errorf("5 chunk opens listed the source %d times", n)
	}
	// A changed Group is read again (its modification time is set ahead,
	// so no wait is needed for the clock to move).
	write(t, dir, "Group.ndjson", `{"resourceType":"Group","id":"g","member":[{"entity":{"reference":"Patient/p1"}}]}`)
	os.Chtimes(filepath.Join(dir, "Group.ndjson"), time.Now().Add(time.Second), time.Now().Add(time.Second))
	m, err := s.GroupMembers(ctx, "g")
	if err != nil || len(m) != 1 || m[0] != "p1" {
		t.Errorf("members after the Group changed = %v, %v", m, err)
	}
}
