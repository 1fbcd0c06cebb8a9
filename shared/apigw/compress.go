package apigw

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/bulkfhir/bulkfhir/shared/gzfile"
)

// compressFrom is the body size from which a response to a client that
// accepts gzip is sent compressed. A Lambda response is capped at 6 MB
// (the event JSON, base64 included); a complete manifest of presigned
// links is about 420 bytes a file, so unpaged it crosses the cap near
// 15,000 files. Compressed (the links share all but their signatures) it
// is about 15 times smaller, base64 and all.
const compressFrom = 64 << 10

// compressLarge sends large responses gzip-compressed to clients that
// accept it (Accept-Encoding, q > 0); the proxy writer base64-encodes
// the compressed body for API Gateway, which decodes it. Smaller responses
// and other clients are answered as the handler wrote them.
func compressLarge(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !gzfile.Accepted(r.Header.Values("Accept-Encoding")) {
			h.ServeHTTP(w, r)
			return
		}
		z := &gzipped{}
		b := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
		h.ServeHTTP(b, r.WithContext(context.WithValue(r.Context(), gzippedKey{}, z)))
		for k, v := range b.header {
			w.Header()[k] = v
		}
		body := b.body.Bytes()
		if len(body) >= compressFrom && w.Header().Get("Content-Encoding") == "" {
			body = z.compress(body)
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Add("Vary", "Accept-Encoding")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.WriteHeader(b.status)
		w.Write(body)
	})
}

// bufferedResponse holds a response until the handler is done.
type bufferedResponse struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if !b.wroteHeader {
		b.status, b.wroteHeader = status, true
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.wroteHeader = true
	return b.body.Write(p)
}

// MaxResponseBytes is the Lambda service's cap on a function's response
// (6 MB: the JSON of the API Gateway response event, body included).
const MaxResponseBytes = 6 << 20

// responseOverhead is room for the rest of the response event: status,
// headers (a 307's Location, a few hundred bytes of others) and fields.
const responseOverhead = 32 << 10

// Fits reports whether body, answered to r, fits in one Lambda response as
// the gateway will send it: JSON-escaped in the response event, or, behind
// the HTTP API to a client that accepts gzip (compressLarge),
// compressed and base64-encoded.
func Fits(r *http.Request, body []byte) bool {
	return fitsIn(r, body, MaxResponseBytes-responseOverhead)
}

func fitsIn(r *http.Request, body []byte, limit int) bool {
	if jsonStringLen(body) <= limit {
		return true
	}
	z, ok := r.Context().Value(gzippedKey{}).(*gzipped)
	if !ok || len(body) < compressFrom {
		return false
	}
	return base64.StdEncoding.EncodedLen(len(z.compress(body)))+2 <= limit
}

// jsonStringLen is the length of s encoded as a JSON string the way the
// Lambda runtime encodes the response (aws-lambda-go: encoding/json
// without HTML escaping): quotes, backslashes and control characters
// escaped, U+2028, U+2029 and invalid UTF-8 as \uXXXX escapes, quotes
// included.
func jsonStringLen(s []byte) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}

// gzipped compresses a body once for both Fits and compressLarge (the
// size check compresses the body the handler then writes).
type gzipped struct{ in, out []byte }

type gzippedKey struct{}

func (g *gzipped) compress(body []byte) []byte {
	if g.out != nil && bytes.Equal(g.in, body) {
		return g.out
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	zw.Write(body)
	zw.Close()
	g.in, g.out = body, z.Bytes()
	return g.out
}
