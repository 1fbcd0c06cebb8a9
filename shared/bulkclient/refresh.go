package bulkclient

import (
	"context"
	"strings"
	"sync"
	"time"
)

// A manifest's links may end before the export expires: a presigned link
// lives at most as long as the session that signed it (bulkfhir's on AWS:
// under an hour), and the IG lets a client poll the status URL again for
// fresh ones. A download refused with 403 or 404 is retried once with the
// same file's link from a new poll.

// linkRefresher holds the status URL and the newest links read from it.
type linkRefresher struct {
	mu        sync.Mutex
	statusURL string
	links     map[string]string // a link without its query → the newest link
	at        time.Time
}

// refreshEvery bounds how often parallel downloads poll for fresh links.
const refreshEvery = 30 * time.Second

// linkKey is a link without its query (the signature and expiry).
func linkKey(u string) string {
	k, _, _ := strings.Cut(u, "?")
	return k
}

// freshLink returns a link newer than old to the same file, polling the
// status URL at most once per refreshEvery; false if there is none.
func (c *Client) freshLink(ctx context.Context, old string) (string, bool) {
	r := &c.refresh
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.statusURL == "" {
		return "", false
	}
	if r.links == nil || time.Since(r.at) > refreshEvery {
		_, m, err := c.pollPages(ctx, r.statusURL, false)
		if err != nil {
			return "", false
		}
		r.links, r.at = map[string]string{}, time.Now()
		for _, list := range [][]Entry{m.Output, m.Error, m.Deleted} {
			for _, e := range list {
				r.links[linkKey(e.URL)] = e.URL
			}
		}
	}
	u, ok := r.links[linkKey(old)]
	return u, ok && u != old
}
