package gzfile

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"strings"
	"testing"
)

func compress(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPlain: the plain view reads every range of the content, after seeks
// forwards and backwards, and knows its size from the trailer.
func TestPlain(t *testing.T) {
	content := []byte(strings.Repeat(`{"resourceType":"Patient","id":"p"}`+"\n", 5000))
	gz := compress(t, content)
	size, err := PlainSize(bytes.NewReader(gz), int64(len(gz)))
	if err != nil || size != int64(len(content)) {
		t.Fatalf("PlainSize = %d %v, want %d", size, err, len(content))
	}
	p := NewPlain(bytes.NewReader(gz), size)
	for _, tc := range []struct{ off, n int64 }{{0, 10}, {100000, 50}, {5, 7}, {size - 3, 3}, {0, size}} {
		if _, err := p.Seek(tc.off, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, tc.n)
		if _, err := io.ReadFull(p, got); err != nil {
			t.Fatalf("read %d at %d: %v", tc.n, tc.off, err)
		}
		if !bytes.Equal(got, content[tc.off:tc.off+tc.n]) {
			t.Errorf("read %d at %d: wrong bytes", tc.n, tc.off)
		}
	}
	if end, _ := p.Seek(0, io.SeekEnd); end != size {
		t.Errorf("Seek(0, End) = %d, want %d", end, size)
	}
	if _, err := PlainSize(bytes.NewReader([]byte("short")), 5); err == nil {
		t.Error("PlainSize of a short file succeeded")
	}
}

// TestNewReader: compressed content is decompressed, plain passes through.
func TestNewReader(t *testing.T) {
	content := []byte(`{"resourceType":"Patient"}` + "\n")
	for name, stored := range map[string][]byte{"gzip": compress(t, content), "plain": content, "empty": nil} {
		rc, err := NewReader(io.NopCloser(bytes.NewReader(stored)))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, _ := io.ReadAll(rc)
		want := content
		if name == "empty" {
			want = nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: read %q", name, got)
		}
	}
	if Compressed("job/plan.json") || !Compressed("job/Patient.0000.ndjson") {
		t.Error("Compressed: only NDJSON files are compressed")
	}
}

// TestStandardGzip: what NewWriter stores is one standard gzip member,
// read whole by the standard library's reader with nothing after it, so
// S3's Content-Encoding: gzip, browsers and every client decode it.
func TestStandardGzip(t *testing.T) {
	content := []byte(strings.Repeat(`{"resourceType":"Observation","id":"o","status":"final"}`+"\n", 20000))
	gz := compress(t, content)
	r := bytes.NewReader(gz) // a ByteReader: the reader reads no further than its member
	zr, err := stdgzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	got, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("standard reader: %d bytes, %v; want the %d written", len(got), err, len(content))
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes after the first member, want one member", r.Len())
	}
	if len(gz) >= len(content)/5 {
		t.Errorf("stored %d bytes of %d: not compressed", len(gz), len(content))
	}
}

// TestWriterReuse: compressors come back from the pool reset, so files
// written one after another (and a write after Close) keep their own
// content; an unclosed Writer leaves no trace in the next.
func TestWriterReuse(t *testing.T) {
	abandoned := NewWriter(io.Discard)
	abandoned.Write([]byte("never closed"))
	for i, content := range []string{strings.Repeat("first file\n", 1000), "", strings.Repeat("second\n", 3)} {
		var buf bytes.Buffer
		zw := NewWriter(&buf)
		zw.Write([]byte(content))
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write([]byte("late")); err == nil {
			t.Errorf("file %d: write after Close succeeded", i)
		}
		if err := zw.Close(); err != nil {
			t.Errorf("file %d: second Close: %v", i, err)
		}
		zr, err := stdgzip.NewReader(&buf)
		if err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || string(got) != content {
			t.Errorf("file %d: read %d bytes (%v), want the %d written", i, len(got), err, len(content))
		}
	}
}
