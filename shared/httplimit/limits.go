// Package httplimit holds the embedded server's limits on clients: read and
// write deadlines per request kind (a download's write deadline advances
// with each write, so a large file over a slow link finishes while a
// stalled reader is cut off), the idle timeout, the largest request header
// and the most connections served at once. Without them 1,000 slow bodies
// held the server for minutes and 1,024 open connections exhausted its
// file descriptors.
package httplimit

import (
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Limits are the server's limits; zero fields take the defaults.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing the response of an API request.
	WriteTimeout time.Duration
	// DownloadIdle bounds how long a download may go without the client
	// taking any bytes; the deadline moves forward with every write.
	DownloadIdle time.Duration
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
	// MaxConns bounds the connections served at once; more wait in the
	// listen backlog, holding no file descriptor of the server.
	MaxConns int
}

// Defaults.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = time.Minute
	DefaultDownloadIdle      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxConns          = 512
)

func (l Limits) withDefaults() Limits {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	set(&l.ReadTimeout, DefaultReadTimeout)
	set(&l.WriteTimeout, DefaultWriteTimeout)
	set(&l.DownloadIdle, DefaultDownloadIdle)
	set(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
	}
	return l
}

// Server returns an http.Server serving h within the limits. isDownload
// tells the requests whose write deadline advances with progress.
func (l Limits) Server(h http.Handler, isDownload func(*http.Request) bool) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Handler:           l.deadlines(h, isDownload),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		// ReadTimeout and WriteTimeout stay zero here: they are set per
		// request below, because a download must not have a fixed end.
	}
}

// Listener limits ln to MaxConns connections at once.
func (l Limits) Listener(ln net.Listener) net.Listener {
	return netutil.LimitListener(ln, l.withDefaults().MaxConns)
}

// deadlines sets each request's read and write deadlines.
func (l Limits) deadlines(h http.Handler, isDownload func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		now := time.Now()
		_ = rc.SetReadDeadline(now.Add(l.ReadTimeout))
		if isDownload != nil && isDownload(r) {
			_ = rc.SetWriteDeadline(now.Add(l.DownloadIdle))
			h.ServeHTTP(&progressWriter{ResponseWriter: w, rc: rc, idle: l.DownloadIdle}, r)
			return
		}
		_ = rc.SetWriteDeadline(now.Add(l.WriteTimeout))
		h.ServeHTTP(w, r)
	})
}

// progressWriter moves the write deadline forward before every write.
type progressWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (p *progressWriter) Write(b []byte) (int, error) {
	_ = p.rc.SetWriteDeadline(time.Now().Add(p.idle))
	return p.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }
