package smartauth

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a fetched JWK Set.
const maxJWKSBytes = 256 << 10

// maxJWKSCache caps how long a fetched JWK Set is reused, whatever its
// Cache-Control says.
const maxJWKSCache = time.Hour

// JWKSFetcher fetches clients' JWKS URLs with a timeout and caches each
// set no longer than its Cache-Control max-age allows (no-store, no-cache
// or no max-age: not cached).
type JWKSFetcher struct {
	// HTTP fetches the sets; nil means a client with a 5 s timeout that
	// follows no redirects.
	HTTP *http.Client
	Now  func() time.Time

	mu    sync.Mutex
	cache map[string]cachedSet
}

type cachedSet struct {
	set   *jose.JSONWebKeySet
	until time.Time
}

func (f *JWKSFetcher) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *JWKSFetcher) client() *http.Client {
	if f.HTTP != nil {
		return f.HTTP
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Fetch returns the key set at url, from the cache unless fresh is set.
func (f *JWKSFetcher) Fetch(ctx context.Context, url string, fresh bool) (*jose.JSONWebKeySet, error) {
	if err := checkJWKSURL(url); err != nil {
		return nil, err
	}
	f.mu.Lock()
	c, ok := f.cache[url]
	f.mu.Unlock()
	if ok && !fresh && f.now().Before(c.until) {
		return c.set, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := f.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks %s: answered %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("jwks %s: larger than %d bytes", url, maxJWKSBytes)
	}
	set, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("jwks %s: %w", url, err)
	}
	if age := cacheFor(resp.Header.Get("Cache-Control")); age > 0 {
		f.mu.Lock()
		if f.cache == nil {
			f.cache = map[string]cachedSet{}
		}
		f.cache[url] = cachedSet{set: set, until: f.now().Add(age)}
		f.mu.Unlock()
	}
	return set, nil
}

// cacheFor is how long a response with this Cache-Control may be reused.
func cacheFor(cc string) time.Duration {
	var age time.Duration
	for _, d := range strings.Split(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(strings.ToLower(d)), "=")
		switch name {
		case "no-store", "no-cache":
			return 0
		case "max-age":
			n, err := strconv.Atoi(strings.Trim(val, `"`))
			if err != nil || n <= 0 {
				return 0
			}
			age = time.Duration(n) * time.Second
		}
	}
	return min(age, maxJWKSCache)
}
