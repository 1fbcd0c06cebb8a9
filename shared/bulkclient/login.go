package bulkclient

import "context"

// TokenSource supplies access tokens (smartclient.TokenSource: SMART
// Backend Services), renewed before they expire; Invalidate is called
// after a 401 so the next request gets a fresh one.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
	Invalidate()
}
