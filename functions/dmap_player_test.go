package functions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
)

// TestDistributedMapPlayer checks the played Map on its own, with fake
// reads and children: the ItemReader key comes from the input, the
// ItemSelector builds each child's input, at most MaxConcurrency children
// run at once, a ResultWriter manifest is written, and one failed child
// fails the Map with States.ExceedToleratedFailureThreshold.
func TestDistributedMapPlayer(t *testing.T) {
	def := []byte(`{"StartAt":"M","States":{"M":{"Type":"Map","ItemReader":{"Resource":"arn:aws:states:::s3:getObject",
		"ReaderConfig":{"InputType":"JSON"},"Parameters":{"Bucket":"b","Key.$":"$.plan.key"}},
		"ItemSelector":{"jobId.$":"$.jobId","unit.$":"$$.Map.Item.Value","i.$":"$$.Map.Item.Index"},"MaxConcurrency":3,
		"ItemProcessor":{"ProcessorConfig":{"Mode":"DISTRIBUTED"},"StartAt":"X","States":{"X":{"Type":"Succeed"}}},
		"ResultWriter":{"Resource":"arn:aws:states:::s3:putObject","Parameters":{"Bucket":"b","Prefix":"runs"}},
		"ResultPath":null,"Catch":[{"ErrorEquals":["States.ALL"],"Next":"F"}],"Next":"F"},"F":{"Type":"Succeed"}}}`)
	parent, maps, err := splitDistributed(def, "arn:fn:dmap-")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(parent), `"Resource":"arn:fn:dmap-M"`) || !strings.Contains(string(parent), `"Catch"`) || len(maps) != 1 {
		t.Fatalf("parent = %s", parent)
	}
	items := make([]string, 20)
	for i := range items {
		items[i] = fmt.Sprintf(`{"id":"u%d"}`, i)
	}
	for _, tc := range []struct {
		name    string
		failAt  int // -1: none
		wantErr string
	}{
		{"all succeed", -1, ""},
		{"one child fails", 7, "States.ExceedToleratedFailureThreshold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			running, most := 0, 0
			// Children hold until three run at once: the Map must start
			// that many, and the cap keeps a fourth from starting.
			gate := make(chan struct{})
			var open sync.Once
			seen := map[string]bool{}
			var written string
			io := mapIO{
				read: func(_ context.Context, bucket, key string) ([]byte, error) {
					if bucket != "b" || key != "exports/j/plan.json" {
						return nil, fmt.Errorf("no object s3://%s/%s", bucket, key)
					}
					return []byte("[" + strings.Join(items, ",") + "]"), nil
				},
				write: func(_ context.Context, bucket, key string, body []byte) error {
					written = bucket + "/" + key
					return nil
				},
				child: func(ctx context.Context, _ json.RawMessage, in []byte) (outcome, error) {
					var ci struct {
						JobID string
						Unit  struct{ ID string }
						I     int
					}
					json.Unmarshal(in, &ci)
					mu.Lock()
					running++
					most = max(most, running)
					seen[ci.JobID+"/"+ci.Unit.ID] = true
					if running == 3 {
						open.Do(func() { close(gate) })
					}
					mu.Unlock()
					<-gate
					defer func() { mu.Lock(); running--; mu.Unlock() }()
					if ci.I == tc.failAt {
						return outcome{OK: false, Error: "RetryableError", Cause: "boom"}, nil
					}
					return outcome{OK: true, Output: json.RawMessage(`{}`)}, nil
				},
			}
			out, err := maps["M"].run(context.Background(), "run1", []byte(`{"jobId":"j","plan":{"key":"exports/j/plan.json"}}`), io)
			var me *mapError
			if tc.wantErr != "" {
				if !errors.As(err, &me) || me.Name != tc.wantErr || !strings.Contains(me.Cause, "boom") {
					t.Fatalf("err = %v, want %s naming the child's error", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(seen) != len(items) || !seen["j/u0"] || !seen["j/u19"] || most != 3 {
				t.Errorf("children %d (%v), at most %d at once; want %d, ≤ 3", len(seen), seen, most, len(items))
			}
			if written != "b/runs/run1/manifest.json" || !strings.Contains(string(out), `"ResultWriterDetails"`) {
				t.Errorf("result %s, manifest at %q", out, written)
			}
		})
	}
}

// TestStepFunctionsLimitsFire is the negative control of the limits the
// runner enforces: a state output over 256 KiB and an execution past
// 25,000 history events each fail the execution and name the limit, while
// the same machines under the limits succeed.
func TestStepFunctionsLimitsFire(t *testing.T) {
	root, err := awstest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	w, err := startWorker(root)
	if err != nil {
		awstest.Handle(t, err)
	}
	defer w.close()
	big := func(n int) string {
		return fmt.Sprintf(`{"StartAt":"P","States":{"P":{"Type":"Pass","Result":{"x":%q},"End":true}}}`, strings.Repeat("a", n))
	}
	loop := func(n int) string {
		// A Pass loop counting down with intrinsic math: 2 events a turn.
		return fmt.Sprintf(`{"StartAt":"Init","States":{
			"Init":{"Type":"Pass","Parameters":{"n":%d},"Next":"Dec"},
			"Dec":{"Type":"Pass","Parameters":{"n.$":"States.MathAdd($.n, -1)"},"Next":"More?"},
			"More?":{"Type":"Choice","Choices":[{"Variable":"$.n","NumericGreaterThan":0,"Next":"Dec"}],"Default":"Done"},
			"Done":{"Type":"Succeed"}}}`, n)
	}
	for _, tc := range []struct {
		name, def, wantErr string
	}{
		{"state under 256 KiB", big(200 << 10), ""},
		{"state over 256 KiB", big(257 << 10), "States.DataLimitExceeded"},
		{"history under 25,000 events", loop(5000), ""},
		{"history over 25,000 events", loop(7000), "States.Runtime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := w.run(context.Background(), json.RawMessage(tc.def), []byte(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantErr == "" {
				if !o.OK || o.Limit != "" || o.Events == 0 || o.MaxStateBytes == 0 {
					t.Errorf("outcome = %+v, want success with its figures", o)
				}
				return
			}
			if o.OK || o.Error != tc.wantErr || o.Limit == "" {
				t.Errorf("outcome = %+v, want %s naming the limit", o, tc.wantErr)
			}
		})
	}
}
