package api

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

type countingSource struct {
	*exporttest.Source
	calls atomic.Int32
	gen   atomic.Int32
}

func (s *countingSource) Types(ctx context.Context) ([]string, error) {
	s.calls.Add(1)
	return s.Source.Types(ctx)
}

func (s *countingSource) Generation() int { return int(s.gen.Load()) }

func TestTypeCache(t *testing.T) {
	src := &countingSource{Source: &exporttest.Source{Lines: map[string][]string{"Patient": {`{"resourceType":"Patient","id":"a"}`}}}}
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := &typeCache{now: func() time.Time { return clock }}
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if types, err := c.get(ctx, src); err != nil || len(types) != 1 {
				t.Errorf("types = %v, %v", types, err)
			}
		}()
	}
	wg.Wait()
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("100 concurrent metadata reads asked the source %d times, want 1", n)
	}
	src.gen.Add(1) // an export saw a change
	c.get(ctx, src)
	if n := src.calls.Load(); n != 2 {
		t.Errorf("after a source change: %d reads, want 2", n)
	}
	c.get(ctx, src)
	clock = clock.Add(TypesTTL)
	c.get(ctx, src)
	if n := src.calls.Load(); n != 3 {
		t.Errorf("after the TTL: %d reads, want 3", n)
	}
}
