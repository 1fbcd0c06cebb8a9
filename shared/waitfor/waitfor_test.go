package waitfor

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestCondition(t *testing.T) {
	tests := []struct {
		name      string
		trueAfter int32 // calls before cond holds; -1 never
		want      bool
	}{
		{"holds at once", 0, true},
		{"holds after a few checks", 3, true},
		{"never holds", -1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			got := Condition(50*time.Millisecond, time.Millisecond, func() bool {
				n := calls.Add(1)
				return tc.trueAfter >= 0 && n > tc.trueAfter
			})
			if got != tc.want {
				t.Errorf("Condition = %v after %d checks, want %v", got, calls.Load(), tc.want)
			}
			if tc.want && calls.Load() != tc.trueAfter+1 {
				t.Errorf("%d checks, want %d (it stops when the condition holds)", calls.Load(), tc.trueAfter+1)
			}
		})
	}
}
