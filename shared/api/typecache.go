package api

import (
	"context"
	"sync"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// TypesTTL is how long /metadata reuses the source's type list before it
// asks the source again. Without a cache every metadata request rescanned
// the data directory, and a flood of them slowed kick-offs tenfold.
const TypesTTL = 10 * time.Second

// generational is a Source that counts changes to what it holds (the
// NDJSON source bumps it when it re-indexes a changed file), so a cached
// type list is dropped as soon as an export has seen the change.
type generational interface {
	Generation() int
}

// typeCache caches a source's type list for the CapabilityStatement.
// Concurrent misses wait for one read instead of each reading.
type typeCache struct {
	mu    sync.Mutex
	types []string
	at    time.Time
	gen   int
	now   func() time.Time
}

func (c *typeCache) get(ctx context.Context, src export.Source) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := -1
	if g, ok := src.(generational); ok {
		gen = g.Generation()
	}
	now := c.now()
	if c.types != nil && gen == c.gen && now.Sub(c.at) < TypesTTL {
		return c.types, nil
	}
	types, err := src.Types(ctx)
	if err != nil {
		return nil, err
	}
	if g, ok := src.(generational); ok {
		gen = g.Generation() // Types may have re-indexed
	}
	c.types, c.at, c.gen = types, now, gen
	return types, nil
}
