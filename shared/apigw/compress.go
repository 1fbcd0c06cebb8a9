package apigw

import (
	"bytes"
	"compress/gzip"
	"net/http"
	"strconv"

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
		b := &bufferedResponse{header: http.Header{}, status: http.StatusOK}
		h.ServeHTTP(b, r)
		for k, v := range b.header {
			w.Header()[k] = v
		}
		body := b.body.Bytes()
		if len(body) >= compressFrom && w.Header().Get("Content-Encoding") == "" {
			var z bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
			zw.Write(body)
			zw.Close()
			body = z.Bytes()
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
