package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/metrics"
)

func TestEMFLine(t *testing.T) {
	cases := []struct {
		name   string
		ev     metrics.Event
		want   string
		noLine bool
	}{
		{name: "one figure", ev: metrics.Event{Job: "j1", Values: []metrics.Value{{Name: metrics.ChunkBytes, Value: 42}}},
			want: `{"ChunkBytes":42,"Stack":"s1","_aws":{"Timestamp":1767225600000,"CloudWatchMetrics":[{"Namespace":"ns","Dimensions":[["Stack"]],"Metrics":[{"Name":"ChunkBytes","Unit":"Bytes"}]}]},"job":"j1","msg":"metrics"}`},
		{name: "unknown figures are dropped", ev: metrics.Event{Values: []metrics.Value{{Name: "Made-up", Value: 1}, {Name: metrics.QueuedJobs, Value: 3}}},
			want: `{"QueuedJobs":3,"Stack":"s1","_aws":{"Timestamp":1767225600000,"CloudWatchMetrics":[{"Namespace":"ns","Dimensions":[["Stack"]],"Metrics":[{"Name":"QueuedJobs","Unit":"Count"}]}]},"msg":"metrics"}`},
		{name: "nothing to say", ev: metrics.Event{Job: "j1", Values: []metrics.Value{{Name: "Made-up", Value: 1}}}, noLine: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			e := metrics.NewEMF(&buf, "ns", "s1")
			e.SetClock(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) })
			e.Record(context.Background(), tc.ev)
			if tc.noLine {
				if buf.Len() != 0 {
					t.Fatalf("wrote %s", buf.String())
				}
				return
			}
			if got := buf.String(); got != tc.want+"\n" {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if !json.Valid(buf.Bytes()) {
				t.Fatal("not JSON")
			}
		})
	}
	for name, unit := range metrics.Units {
		if unit == "" {
			t.Errorf("%s has no unit", name)
		}
	}
}
