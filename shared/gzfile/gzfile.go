// Package gzfile holds how exported NDJSON files are stored compressed:
// which keys are compressed (the .ndjson files; the plan and patient
// batches stay plain JSON because Step Functions' ItemReader reads the
// plan object itself), the writer that compresses them in the file
// stores, a reader that decompresses what it finds compressed (files
// stored before compression still read), and a seekable plain view of a
// compressed file for a server that must answer a client that does not
// accept gzip, byte ranges included.
//
// The compressor is github.com/klauspost/compress's gzip, a drop-in for
// compress/gzip that writes the same standard single-member gzip 3-4x
// faster. At Level 3 FHIR NDJSON compresses 11.9:1 at about 610 MB/s on one
// core (the generated sample data; the standard library's default level:
// 13.1:1 at 170 MB/s), fast enough to run beside the engine's checking of
// the next lines without slowing it (BenchmarkLevels, docs/downloads.md).
package gzfile

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// Level is the compression level of stored files: the highest whose
// compressor keeps up, on one core, with the engine checking lines on
// another (level 5 is 12.3:1 at 350 MB/s and would become the export's
// bottleneck; level 1 is 11.2:1 and saves CPU but not time).
const Level = 3

// Encoding is the Content-Encoding of a compressed file.
const Encoding = "gzip"

// Compressed reports whether the file at key is stored compressed.
func Compressed(key string) bool { return strings.HasSuffix(key, ".ndjson") }

// Writer compresses into one stored file. Close ends the stream (and does
// not close the file) and hands the compressor back to a pool: an export
// opens a file per unit and roll, and a fresh compressor's tables (about
// 1 MB at Level) were a third of what the engine allocated.
type Writer struct {
	zw *gzip.Writer
}

// compressors holds the Writers' compressors between files.
var compressors sync.Pool

// NewWriter compresses what is written into w.
func NewWriter(w io.Writer) *Writer {
	zw, _ := compressors.Get().(*gzip.Writer)
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(w, Level) // Level is valid
	} else {
		zw.Reset(w)
	}
	return &Writer{zw: zw}
}

// errClosed is what a Writer answers after Close.
var errClosed = errors.New("gzip: write after close")

// Write implements io.Writer.
func (w *Writer) Write(p []byte) (int, error) {
	if w.zw == nil {
		return 0, errClosed
	}
	return w.zw.Write(p)
}

// Close writes the end of the stream. A Writer that is never closed (an
// aborted file) leaves its compressor to the garbage collector.
func (w *Writer) Close() error {
	if w.zw == nil {
		return nil
	}
	err := w.zw.Close()
	w.zw.Reset(io.Discard) // drop the file
	compressors.Put(w.zw)
	w.zw = nil
	return err
}

// magic starts every gzip stream.
var magic = []byte{0x1f, 0x8b}

// IsGzip reports whether head (the first bytes of a file) starts a gzip
// stream.
func IsGzip(head []byte) bool { return bytes.HasPrefix(head, magic) }

// NewReader returns the content of rc, decompressed if it is a gzip
// stream; Close closes rc.
func NewReader(rc io.ReadCloser) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 64<<10)
	head, err := br.Peek(2)
	if err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, err
	}
	if !IsGzip(head) {
		return struct {
			io.Reader
			io.Closer
		}{br, rc}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, rc}, nil
}

// PlainSize is the uncompressed size of the one-member gzip file f of
// size bytes, from its trailer (ISIZE: the size modulo 2^32; exact for the
// files stored here, whose size the file roll keeps far below 4 GiB).
func PlainSize(f io.ReaderAt, size int64) (int64, error) {
	if size < 18 {
		return 0, errors.New("gzip: file too short")
	}
	var tail [4]byte
	if _, err := f.ReadAt(tail[:], size-4); err != nil {
		return 0, err
	}
	return int64(binary.LittleEndian.Uint32(tail[:])), nil
}

// Plain is a seekable, uncompressed view of a gzip file, for
// http.ServeContent: a seek backwards starts decompressing again from the
// start, one forwards skips ahead.
type Plain struct {
	f    io.ReadSeeker
	size int64
	zr   *gzip.Reader
	at   int64 // position of zr in the plain content
	pos  int64 // position asked for
}

// NewPlain returns the plain view of the gzip file f whose uncompressed
// size is size (PlainSize).
func NewPlain(f io.ReadSeeker, size int64) *Plain { return &Plain{f: f, size: size} }

// Seek implements io.Seeker.
func (p *Plain) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += p.pos
	case io.SeekEnd:
		offset += p.size
	default:
		return 0, errors.New("gzip: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("gzip: negative position")
	}
	p.pos = offset
	return offset, nil
}

// Read implements io.Reader.
func (p *Plain) Read(b []byte) (int, error) {
	if p.zr == nil || p.pos < p.at {
		if _, err := p.f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		zr, err := gzip.NewReader(bufio.NewReaderSize(p.f, 64<<10))
		if err != nil {
			return 0, fmt.Errorf("gzip: %w", err)
		}
		zr.Multistream(false)
		p.zr, p.at = zr, 0
	}
	if p.pos > p.at {
		n, err := io.CopyN(io.Discard, p.zr, p.pos-p.at)
		p.at += n
		if err != nil {
			return 0, err
		}
	}
	n, err := p.zr.Read(b)
	p.at += int64(n)
	p.pos = p.at
	return n, err
}

// Accepted reports whether the Accept-Encoding header values admit gzip
// with q > 0.
func Accepted(values []string) bool {
	for _, line := range values {
		for _, part := range strings.Split(line, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if v, err := strconv.ParseFloat(q, 64); err == nil && v <= 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}
