package bulkclient

import (
	"context"
	"io"
	"net/http"
)

// TokenSource supplies access tokens (smartclient.TokenSource: SMART
// Backend Services), renewed before they expire; Invalidate is called
// after a 401 so the next request gets a fresh one.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate()
}

// renewAfter401 reports whether resp is a 401 to a request that carried a
// token from Tokens, and not the second in a row: the token expired or was
// revoked mid-export, so it is dropped (the body too) and the caller
// retries with a fresh login. Any other answer resets *renewed, so a long
// poll can renew many times, but a refused fresh token ends the run.
func (c *Client) renewAfter401(resp *http.Response, req *http.Request, renewed *bool) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		*renewed = false
		return false
	}
	if c.opts.Tokens == nil || *renewed || req.Header.Get("Authorization") == "" {
		return false
	}
	*renewed = true
	c.opts.Tokens.Invalidate()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	c.rep.Logf("%s %s: 401; logging in again", req.Method, req.URL.Path)
	return true
}
