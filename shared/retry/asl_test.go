package retry

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// definition is the export state machine, relative to this package.
var definition = filepath.Join("..", "..", "infra", "statemachine", "export.asl.json")

// retrier is one entry of a state's Retry field.
type retrier struct {
	ErrorEquals     []string
	IntervalSeconds *float64
	MaxAttempts     *int
	BackoffRate     *float64
	MaxDelaySeconds *float64
	JitterStrategy  string
}

// policyFor names the Policy a retrier must follow, by the errors it
// matches.
func policyFor(errs []string) (string, Policy, bool) {
	switch {
	case slices.Contains(errs, "RetryableError"),
		slices.Contains(errs, "States.ItemReaderFailed"):
		return "Step", Step, true
	case slices.Contains(errs, "Lambda.ServiceException"):
		return "LambdaService", LambdaService, true
	case slices.Equal(errs, []string{"States.ALL"}):
		return "MarkFailed", MarkFailed, true
	}
	return "", Policy{}, false
}

// checkRetriers lists every way the definition's retriers differ from the
// policies, and how many retriers each policy matched.
func checkRetriers(asl []byte) (problems []string, seen map[string]int) {
	// The definition has ${Name} placeholders the stack substitutes,
	// some outside strings.
	asl = regexp.MustCompile(`\$\{[A-Za-z]+\}`).ReplaceAll(asl, []byte("0"))
	var doc any
	if err := json.Unmarshal(asl, &doc); err != nil {
		return []string{fmt.Sprintf("parse the definition: %v", err)}, nil
	}
	seen = map[string]int{}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if k == "Retry" {
					raw, _ := json.Marshal(c)
					var rs []retrier
					if err := json.Unmarshal(raw, &rs); err != nil {
						problems = append(problems, fmt.Sprintf("%s.Retry: %v", path, err))
						continue
					}
					for i, r := range rs {
						problems = append(problems, checkRetrier(fmt.Sprintf("%s.Retry[%d]", path, i), r, seen)...)
					}
					continue
				}
				walk(path+"."+k, c)
			}
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), c)
			}
		}
	}
	walk("$", doc)
	return problems, seen
}

func checkRetrier(where string, r retrier, seen map[string]int) []string {
	name, p, ok := policyFor(r.ErrorEquals)
	if !ok {
		return []string{fmt.Sprintf("%s on %v: no policy in shared/retry names these errors; add one", where, r.ErrorEquals)}
	}
	seen[name]++
	var problems []string
	differ := func(field string, got, want any) {
		problems = append(problems, fmt.Sprintf("%s (%s): %s is %v, retry.%s says %v", where, name, field, got, name, want))
	}
	secs := func(f *float64, def float64) time.Duration {
		if f == nil {
			return time.Duration(def * float64(time.Second))
		}
		return time.Duration(*f * float64(time.Second))
	}
	// Step Functions' defaults: 1 s, 3 attempts, rate 2, no cap, no jitter.
	if got := secs(r.IntervalSeconds, 1); got != p.Interval {
		differ("IntervalSeconds", got, p.Interval)
	}
	attempts := 3
	if r.MaxAttempts != nil {
		attempts = *r.MaxAttempts
	}
	if attempts != p.MaxAttempts {
		differ("MaxAttempts", attempts, p.MaxAttempts)
	}
	rate := 2.0
	if r.BackoffRate != nil {
		rate = *r.BackoffRate
	}
	if rate != p.BackoffRate {
		differ("BackoffRate", rate, p.BackoffRate)
	}
	if got := secs(r.MaxDelaySeconds, 0); got != p.MaxDelay {
		differ("MaxDelaySeconds", got, p.MaxDelay)
	}
	if jitter := r.JitterStrategy == "FULL"; jitter != p.Jitter {
		differ("JitterStrategy", r.JitterStrategy, map[bool]string{true: "FULL", false: "NONE"}[p.Jitter])
	}
	return problems
}

// TestStateMachineUsesThePolicies: every Retry field of the export state
// machine has the numbers of its Policy here (the one place they are
// defined; the local runner applies Step), and each policy is used.
func TestStateMachineUsesThePolicies(t *testing.T) {
	asl, err := os.ReadFile(definition)
	if err != nil {
		t.Fatal(err)
	}
	problems, seen := checkRetriers(asl)
	for _, p := range problems {
		t.Error(p)
	}
	for _, name := range []string{"Step", "LambdaService", "MarkFailed"} {
		if seen[name] == 0 {
			t.Errorf("no retrier in %s follows retry.%s", definition, name)
		}
	}
}

// TestRetrierCheckCanFail: the check reports a definition whose numbers
// drifted from the policies, or a retrier no policy names.
func TestRetrierCheckCanFail(t *testing.T) {
	asl, err := os.ReadFile(definition)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"attempts", `"MaxAttempts": 4`, `"MaxAttempts": 3`, "MaxAttempts is 3"},
		{"interval", `"IntervalSeconds": 2`, `"IntervalSeconds": 1`, "IntervalSeconds is 1s"},
		{"rate", `"BackoffRate": 2`, `"BackoffRate": 1.5`, "BackoffRate is 1.5"},
		{"jitter", `"JitterStrategy": "FULL"`, `"JitterStrategy": "NONE"`, "JitterStrategy is NONE"},
		{"cap", `"JitterStrategy": "FULL"`, `"MaxDelaySeconds": 30, "JitterStrategy": "FULL"`, "MaxDelaySeconds is 30s"},
		{"unnamed errors", `"RetryableError"`, `"SomeOtherError"`, "no policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(asl), tc.old) {
				t.Fatalf("the definition has no %s to change", tc.old)
			}
			changed := strings.Replace(string(asl), tc.old, tc.new, 1)
			problems, _ := checkRetriers([]byte(changed))
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("changing %s to %s: problems %q, want one saying %q", tc.old, tc.new, problems, tc.want)
			}
		})
	}
}
