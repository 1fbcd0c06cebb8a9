package gzfile

import (
	stdgzip "compress/gzip"
	"io"
	"os"
	"path/filepath"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"

	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// sample is the generated sample data, every type's NDJSON concatenated.
func sample(b *testing.B) []byte {
	b.Helper()
	dir := b.TempDir()
	if _, err := sampledata.Generate(dir, sampledata.Options{Patients: 200, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	var all []byte
	for _, n := range names {
		c, err := os.ReadFile(n)
		if err != nil {
			b.Fatal(err)
		}
		all = append(all, c...)
	}
	return all
}

// counter counts what is written to it.
type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

// BenchmarkLevels compresses the sample data with the standard library and
// klauspost/compress at several levels, on one goroutine (one core): MB/s
// of plain input, and the ratio as the metric "ratio" (plain/stored). The
// figures behind Level (docs/downloads.md).
func BenchmarkLevels(b *testing.B) {
	data := sample(b)
	for _, c := range []struct {
		name string
		new  func(io.Writer) io.WriteCloser
	}{
		{"stdlib-1", func(w io.Writer) io.WriteCloser { z, _ := stdgzip.NewWriterLevel(w, 1); return z }},
		{"stdlib-6", func(w io.Writer) io.WriteCloser { z, _ := stdgzip.NewWriterLevel(w, 6); return z }},
		{"klauspost-1", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, 1); return z }},
		{"klauspost-2", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, 2); return z }},
		{"klauspost-3", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, 3); return z }},
		{"klauspost-4", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, 4); return z }},
		{"klauspost-5", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, 5); return z }},
		{"klauspost-6", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, 6); return z }},
		{"klauspost-huffman", func(w io.Writer) io.WriteCloser { z, _ := kgzip.NewWriterLevel(w, kgzip.HuffmanOnly); return z }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var n counter
			for i := 0; i < b.N; i++ {
				n = 0
				z := c.new(&n)
				if _, err := z.Write(data); err != nil {
					b.Fatal(err)
				}
				if err := z.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data))/float64(n), "ratio")
		})
	}
}

// BenchmarkDecompress reads the sample data back, compressed at Level, with
// each library's reader.
func BenchmarkDecompress(b *testing.B) {
	data := sample(b)
	var gz []byte
	{
		var buf = new(bytesBuffer)
		z := NewWriter(buf)
		z.Write(data)
		z.Close()
		gz = buf.b
	}
	for _, c := range []struct {
		name string
		new  func(io.Reader) (io.Reader, error)
	}{
		{"stdlib", func(r io.Reader) (io.Reader, error) { return stdgzip.NewReader(r) }},
		{"klauspost", func(r io.Reader) (io.Reader, error) { return kgzip.NewReader(r) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for i := 0; i < b.N; i++ {
				r, err := c.new(&sliceReader{b: gz})
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
					b.Fatalf("read %d of %d: %v", n, len(data), err)
				}
			}
		})
	}
}

type bytesBuffer struct{ b []byte }

func (w *bytesBuffer) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
