package bulkclient

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

// TestCopyLines: every line reaches each once, in order, newline kept;
// what is written is the input, byte for byte; a refused line and a line
// cut by a read error are never written.
func TestCopyLines(t *testing.T) {
	long := strings.Repeat("x", 100)
	errCut := errors.New("connection reset")
	tests := []struct {
		name      string
		in        io.Reader
		buf       int
		refuse    string // each refuses the line that starts so
		wantLines []string
		wantOut   string
		wantErr   error
	}{
		{name: "lines", in: strings.NewReader("a\nbb\nccc\n"), buf: 1 << 10, wantLines: []string{"a\n", "bb\n", "ccc\n"}, wantOut: "a\nbb\nccc\n"},
		{name: "last line without newline", in: strings.NewReader("a\nbb"), buf: 1 << 10, wantLines: []string{"a\n", "bb"}, wantOut: "a\nbb"},
		{name: "empty", in: strings.NewReader(""), buf: 1 << 10, wantOut: ""},
		{name: "blank lines", in: strings.NewReader("a\n\n  \nb\n"), buf: 1 << 10, wantLines: []string{"a\n", "\n", "  \n", "b\n"}, wantOut: "a\n\n  \nb\n"},
		{name: "lines across blocks", in: strings.NewReader("aaa\nbbb\nccc\nddd\n"), buf: 6, wantLines: []string{"aaa\n", "bbb\n", "ccc\n", "ddd\n"}, wantOut: "aaa\nbbb\nccc\nddd\n"},
		{name: "a line longer than the buffer", in: strings.NewReader("a\n" + long + "\nb\n"), buf: 8, wantLines: []string{"a\n", long + "\n", "b\n"}, wantOut: "a\n" + long + "\nb\n"},
		{name: "one byte a read", in: iotest.OneByteReader(strings.NewReader("a\nbb\nccc")), buf: 4, wantLines: []string{"a\n", "bb\n", "ccc"}, wantOut: "a\nbb\nccc"},
		{name: "data with EOF", in: iotest.DataErrReader(strings.NewReader("a\nbb")), buf: 1 << 10, wantLines: []string{"a\n", "bb"}, wantOut: "a\nbb"},
		{name: "refused line not written", in: strings.NewReader("a\nBAD\nc\n"), buf: 1 << 10, refuse: "BAD", wantLines: []string{"a\n", "BAD\n"}, wantOut: "", wantErr: errRefused},
		{name: "refused line in a later block", in: strings.NewReader("aaa\nbbb\nBAD\nddd\n"), buf: 8, refuse: "BAD", wantLines: []string{"aaa\n", "bbb\n", "BAD\n"}, wantOut: "aaa\nbbb\n", wantErr: errRefused},
		{name: "read error mid-line", in: io.MultiReader(strings.NewReader("a\nhalf a li"), iotest.ErrReader(errCut)), buf: 1 << 10, wantOut: "", wantErr: errCut},
		{name: "read error after a block", in: io.MultiReader(strings.NewReader("aaa\nbbb\nhalf"), iotest.ErrReader(errCut)), buf: 8, wantLines: []string{"aaa\n", "bbb\n"}, wantOut: "aaa\nbbb\n", wantErr: errCut},
		{name: "unexpected EOF is an error", in: io.MultiReader(strings.NewReader("a\nhal"), iotest.ErrReader(io.ErrUnexpectedEOF)), buf: 1 << 10, wantOut: "", wantErr: io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var lines []string
			n, err := copyLines(tc.in, &out, make([]byte, tc.buf), func(line []byte) error {
				lines = append(lines, string(line))
				if tc.refuse != "" && bytes.HasPrefix(line, []byte(tc.refuse)) {
					return errRefused
				}
				return nil
			})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if fmt.Sprint(lines) != fmt.Sprint(tc.wantLines) {
				t.Errorf("lines = %q, want %q", lines, tc.wantLines)
			}
			if out.String() != tc.wantOut || n != int64(out.Len()) {
				t.Errorf("wrote %q (%d counted), want %q", out.String(), n, tc.wantOut)
			}
		})
	}
}

var errRefused = errors.New("refused")

// TestBadGzipDownloads: a download whose gzip stream is cut short or is
// not gzip at all fails the run, and leaves neither the file nor a part
// file behind.
func TestBadGzipDownloads(t *testing.T) {
	tests := []struct {
		name    string
		mangle  func([]byte) []byte
		wantErr string
	}{
		{name: "cut short", mangle: func(b []byte) []byte { return b[:len(b)-6] }, wantErr: "download Patient.1.ndjson"},
		{name: "trailer checksum wrong", mangle: func(b []byte) []byte { b[len(b)-8] ^= 0xff; return b }, wantErr: "checksum"},
		{name: "not gzip", mangle: func([]byte) []byte { return []byte(`{"resourceType":"Patient","id":"1"}` + "\n") }, wantErr: "bad gzip stream"},
		{name: "empty", mangle: func([]byte) []byte { return nil }, wantErr: "bad gzip stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.gzipFiles = true
			f.gzipMangle = func(path string, gz []byte) []byte {
				if path != "/files/Patient.ndjson" {
					return gz
				}
				return tc.mangle(gz)
			}
			_, dir, err := run(t, f, func(o *Options) { o.Parallel = 1 })
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
			for _, name := range []string{"Patient.1.ndjson", "Patient.1.ndjson.part"} {
				if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
					t.Errorf("%s left behind", name)
				}
			}
		})
	}
}
