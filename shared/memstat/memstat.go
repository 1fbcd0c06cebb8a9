// Package memstat measures a process's peak memory, for benchmarks: the
// Go heap sampled while work runs, and the resident set's high-water mark.
package memstat

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Sampler records the peak of runtime.MemStats.HeapInuse.
type Sampler struct {
	peak atomic.Uint64
	stop chan struct{}
	done chan struct{}
}

// Start collects garbage (so the figure starts from live data) and samples
// the heap every interval until Stop.
func Start(interval time.Duration) *Sampler {
	runtime.GC()
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > s.peak.Load() {
				s.peak.Store(ms.HeapInuse)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(interval):
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peak heap in MiB.
func (s *Sampler) Stop() float64 {
	close(s.stop)
	<-s.done
	return float64(s.peak.Load()) / (1 << 20)
}

// PeakRSS is the process's high-water resident set (VmHWM) in MiB, or 0
// where /proc is not available.
func PeakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
