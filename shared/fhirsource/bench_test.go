package fhirsource

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
	"github.com/bulkfhir/bulkfhir/shared/fhirtest"
	"github.com/bulkfhir/bulkfhir/shared/memstat"
)

const benchObservation = `{"resourceType":"Observation","id":"obs-%07d","meta":{"lastUpdated":"2025-03-01T10:00:00.000Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"8867-4","display":"Heart rate"}],"text":"Heart rate"},"subject":{"reference":"Patient/p-%05d"},"effectiveDateTime":"2025-03-01T10:00:00Z","valueQuantity":{"value":72,"unit":"beats/min","system":"http://unitsofmeasure.org","code":"/min"}}`

// bundleStream generates a searchset Bundle of n entries on the fly, so a
// page of any size can be streamed without holding it.
type bundleStream struct {
	n, i   int
	pretty bool
	buf    bytes.Buffer
	done   bool
}

func (s *bundleStream) Read(p []byte) (int, error) {
	for s.buf.Len() < len(p) && !s.done {
		switch {
		case s.i == 0:
			s.buf.WriteString(`{"resourceType":"Bundle","type":"searchset","link":[{"relation":"self","url":"x"}],"entry":[`)
		case s.i > s.n:
			s.buf.WriteString(`]}`)
			s.done = true
			continue
		}
		if s.i >= 1 {
			if s.i > 1 {
				s.buf.WriteByte(',')
			}
			res := fmt.Sprintf(benchObservation, s.i, s.i%5000)
			if s.pretty {
				var ind bytes.Buffer
				_ = jsonIndent(&ind, []byte(res))
				res = ind.String()
			}
			s.buf.WriteString(`{"fullUrl":"Observation/x","resource":` + res + `,"search":{"mode":"match"}}`)
		}
		s.i++
	}
	return s.buf.Read(p)
}

// BenchmarkBundlePageToNDJSON measures the streaming decoder alone: Bundle
// bytes in, compact resource lines out (MB/s of page bytes, one core).
func BenchmarkBundlePageToNDJSON(b *testing.B) {
	for _, pretty := range []bool{false, true} {
		b.Run(fmt.Sprintf("pretty=%v", pretty), func(b *testing.B) {
			var page bytes.Buffer
			io.Copy(&page, &bundleStream{n: 2000, pretty: pretty})
			b.SetBytes(int64(page.Len()))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pg, err := newPage(bytes.NewReader(page.Bytes()), nil)
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for {
					line, err := pg.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					io.Discard.Write(line)
					n++
				}
				if n != 2000 {
					b.Fatalf("%d resources", n)
				}
			}
		})
	}
}

// BenchmarkLargePageMemory streams one page of 400,000 resources (about
// 200 MB) and reports the peak heap while doing so: it must not grow with
// the page.
func BenchmarkLargePageMemory(b *testing.B) {
	for i := 0; i < b.N; i++ {
		sampler := memstat.Start(5 * time.Millisecond)
		src := &countingReader{r: &bundleStream{n: 400_000}}
		pg, err := newPage(src, nil)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := pg.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		peak := sampler.Stop()
		b.SetBytes(src.n)
		b.ReportMetric(peak, "peak-heap-MiB")
		b.ReportMetric(float64(src.n)/(1<<20), "page-MiB")
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// BenchmarkUpstreamRead reads Observations from the test FHIR server over
// loopback HTTP through the Source (paging, compaction): the resources/s an
// export chunk gets from an upstream that answers at once, paged by next
// links (with prefetch) and by keyset (the default on an upstream that
// sorts by _lastUpdated; each page is a search).
func BenchmarkUpstreamRead(b *testing.B) {
	fs := fhirtest.New(fhirtest.Options{})
	const n = 20_000
	batch := make([][]byte, 0, n)
	start := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		line := fmt.Sprintf(benchObservation, i, i%500)
		line = strings.Replace(line, "2025-03-01T10:00:00.000Z", fhir.FormatInstant(start.Add(time.Duration(i)*time.Millisecond)), 1)
		batch = append(batch, []byte(line))
	}
	if err := fs.Add(batch...); err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(fs)
	defer hs.Close()
	s, err := New(Options{BaseURL: hs.URL, PageSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	p, err := s.Probe(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct{ name, upstream string }{{"next links", `{"sorted":false}`}, {"keyset", p.State}} {
		b.Run(mode.name, func(b *testing.B) {
			benchUpstreamRead(b, s, export.Query{Level: bulkdata.LevelSystem, Until: &until, Upstream: mode.upstream}, n)
		})
	}
}

func benchUpstreamRead(b *testing.B, s *Source, q export.Query, n int) {
	b.ResetTimer()
	var bytesRead int64
	for i := 0; i < b.N; i++ {
		r, err := s.Open(context.Background(), q, "Observation", "", "")
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			line, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			bytesRead += int64(len(line)) + 1
			got++
		}
		r.Close()
		if got != n {
			b.Fatalf("read %d of %d", got, n)
		}
	}
	secs := b.Elapsed().Seconds()
	b.ReportMetric(float64(n*b.N)/secs, "resources/s")
	b.ReportMetric(float64(bytesRead)/secs/1e6, "NDJSON-MB/s")
}
