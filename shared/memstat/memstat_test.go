package memstat

import (
	"testing"
	"time"
)

var sink [][]byte

func TestSamplerSeesAnAllocation(t *testing.T) {
	s := Start(time.Millisecond)
	b := make([]byte, 64<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1 // resident, not just reserved
	}
	sink = append(sink, b)
	time.Sleep(20 * time.Millisecond) // a test about time: the sampler runs every 1 ms
	peak := s.Stop()
	sink = nil
	if peak < 64 {
		t.Fatalf("peak heap %.1f MiB while 64 MiB were live", peak)
	}
	if rss := PeakRSS(); rss != 0 && rss < peak/2 {
		t.Fatalf("peak RSS %.1f MiB below the heap", rss)
	}
}
