package export

import "context"

type baseURLKey struct{}

// WithBaseURL records the public FHIR base URL of the current request, for
// adapters that build links to this server (the embedded file store).
func WithBaseURL(ctx context.Context, base string) context.Context {
	return context.WithValue(ctx, baseURLKey{}, base)
}

// BaseURL returns the base URL recorded by WithBaseURL, or "".
func BaseURL(ctx context.Context) string {
	s, _ := ctx.Value(baseURLKey{}).(string)
	return s
}
