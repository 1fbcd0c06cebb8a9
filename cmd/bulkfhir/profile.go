package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// cpuProfile starts a CPU profile into $BULKFHIR_CPUPROFILE when it is set
// (go tool pprof FILE), for performance work on serve and export; stop
// ends it. Unset, it does nothing.
func cpuProfile(cmd string) (stop func(), err error) {
	path := os.Getenv("BULKFHIR_CPUPROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: cpu profile: %w", cmd, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: cpu profile: %w", cmd, err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
