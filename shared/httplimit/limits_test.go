package httplimit

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDownloadDeadlineMovesWithProgress: a response written in pieces over
// longer than WriteTimeout is cut off on an API route and completes on a
// download route, whose deadline advances with each write. (A test about
// time: the handler paces its writes.)
func TestDownloadDeadlineMovesWithProgress(t *testing.T) {
	const pieces = 8
	paced := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i < pieces; i++ {
			if _, err := w.Write([]byte(strings.Repeat("x", 1024) + "\n")); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			time.Sleep(100 * time.Millisecond) // a test about time: writes paced past the write timeout
		}
	})
	l := Limits{WriteTimeout: 300 * time.Millisecond, DownloadIdle: 2 * time.Second}
	srv := l.Server(paced, func(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/download") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l.Listener(ln))
	t.Cleanup(func() { srv.Close() })
	get := func(path string) int {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Count(string(b), "\n")
	}
	if n := get("/download/f"); n != pieces {
		t.Errorf("download got %d of %d pieces", n, pieces)
	}
	if n := get("/api"); n >= pieces {
		t.Errorf("API response got all %d pieces past its write timeout", n)
	}
}
