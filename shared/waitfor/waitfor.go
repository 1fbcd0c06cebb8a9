// Package waitfor waits, in tests, for a condition rather than for a
// fixed time: Condition checks it at a pace until it holds or a time limit
// passes. The pace only spaces the checks (a server, a process, a job
// store polled from outside); the limit is a safety net that turns a hang
// into a failure. Tests that are about time (expiry, pacing) still wait
// with a timer, and say so. No shipped binary links it.
package waitfor

import "time"

// Condition calls cond every interval until it returns true (then true) or
// limit has passed (then cond's last answer, checked once more).
func Condition(limit, interval time.Duration, cond func() bool) bool {
	if cond() {
		return true
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return true
			}
		case <-deadline.C:
			return cond()
		}
	}
}
