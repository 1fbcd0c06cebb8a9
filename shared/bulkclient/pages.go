package bulkclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
)

// Paged and partial manifests (allowPartialManifests, N-04). The pages of
// a manifest never change once returned, except that the last one gains a
// next link; so the client keeps the pages it has merged, polls the last
// one until it links on, and names files by their place in the merged
// manifest, which only grows at its end.

// pages is the manifest merged from the pages read so far.
type pages struct {
	merged *Manifest
	// paths locates each listed file by its URL path (links are re-signed
	// per request): its array (0 output, 1 error, 2 deleted) and index.
	paths map[string][2]int
	// early holds what was downloaded while the export ran, and seen the
	// file names already handled then.
	early *Summary
	seen  map[string]bool
}

// merge appends the files of page m that are not listed yet, and takes
// the fresh links of those that are (a page read again is re-signed).
func (p *pages) merge(m *Manifest) {
	if p.merged == nil {
		first := *m
		first.Output, first.Error, first.Deleted, first.Link = nil, nil, nil, nil
		p.merged, p.paths = &first, map[string][2]int{}
	}
	dsts := []*[]Entry{&p.merged.Output, &p.merged.Error, &p.merged.Deleted}
	for kind, list := range [][]Entry{m.Output, m.Error, m.Deleted} {
		for _, e := range list {
			key := e.URL
			if u, err := url.Parse(e.URL); err == nil {
				key = u.Path
			}
			if at, ok := p.paths[key]; ok {
				(*dsts[at[0]])[at[1]] = e
				continue
			}
			p.paths[key] = [2]int{kind, len(*dsts[kind])}
			*dsts[kind] = append(*dsts[kind], e)
		}
	}
}

// files counts the files merged so far.
func (p *pages) files() int {
	if p.merged == nil {
		return 0
	}
	return len(p.merged.Output) + len(p.merged.Error) + len(p.merged.Deleted)
}

// manifest is the merged manifest as one JSON document (no links).
func (p *pages) manifest() ([]byte, *Manifest, error) {
	m := p.merged
	for _, l := range []*[]Entry{&m.Output, &m.Error, &m.Deleted} {
		if *l == nil {
			*l = []Entry{}
		}
	}
	raw, err := json.Marshal(m)
	return raw, m, err
}

// downloadEarly fetches the files of the merged pages not fetched yet
// while the export runs. With strict filters it waits for the end: the
// error files that say a filter was dropped come last.
func (c *Client) downloadEarly(ctx context.Context, p *pages) error {
	if c.opts.StrictFilters && len(c.opts.TypeFilters) > 0 {
		return nil
	}
	if p.early == nil {
		p.early, p.seen = &Summary{RequiresAccessToken: p.merged.RequiresAccessToken}, map[string]bool{}
	}
	var jobs []job
	for _, j := range plan(p.merged) {
		if !p.seen[j.name] {
			p.seen[j.name] = true
			jobs = append(jobs, j)
		}
	}
	jobs = c.asked(jobs, p.early)
	if len(jobs) == 0 {
		return nil
	}
	c.rep.Logf("downloading %d files of a partial manifest", len(jobs))
	return c.fetch(ctx, jobs, p.merged.RequiresAccessToken, p.early)
}

// allPages follows the next links of a complete manifest's first page and
// returns the merged manifest (for Status; Run follows them while polling).
func (c *Client) allPages(ctx context.Context, first *Manifest) (*Manifest, error) {
	var p pages
	p.merge(first)
	seen := map[string]bool{}
	for next := first.Next(); next != ""; {
		if seen[next] {
			return nil, fail("manifest: next link %s loops", next)
		}
		seen[next] = true
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, fail("manifest next link %q: %v", next, err)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := c.do(req, true)
		if err != nil {
			return nil, fail("GET %s: %v", next, unwrapURLError(err))
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, fail("manifest page %s: %d %v", next, resp.StatusCode, err)
		}
		m, err := parseManifest(raw)
		if err != nil {
			return nil, err
		}
		p.merge(m)
		next = m.Next()
	}
	_, m, err := p.manifest()
	return m, err
}
