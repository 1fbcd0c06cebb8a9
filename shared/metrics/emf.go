package metrics

import (
	"context"
	"encoding/json"
	"io"
	"sync"
	"time"
)

// EMF writes each event as one CloudWatch Embedded Metric Format line: a
// JSON object whose _aws member declares the metrics (namespace, the Stack
// dimension, each figure's name and unit) and whose top-level members hold
// their values, the dimension's value and the job id. CloudWatch Logs turns
// the lines of a Lambda function's log into metrics; no API call is made.
type EMF struct {
	mu        sync.Mutex
	w         io.Writer
	namespace string
	stack     string
	now       func() time.Time
}

var _ Recorder = (*EMF)(nil)

// NewEMF writes EMF lines to w (a Lambda function's stdout).
func NewEMF(w io.Writer, namespace, stack string) *EMF {
	return &EMF{w: w, namespace: namespace, stack: stack, now: time.Now}
}

// SetClock replaces the clock (tests).
func (e *EMF) SetClock(now func() time.Time) { e.now = now }

type emfMetric struct {
	Name string `json:"Name"`
	Unit Unit   `json:"Unit"`
}

type emfDirective struct {
	Namespace  string      `json:"Namespace"`
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []emfMetric `json:"Metrics"`
}

type emfMeta struct {
	Timestamp         int64          `json:"Timestamp"`
	CloudWatchMetrics []emfDirective `json:"CloudWatchMetrics"`
}

// Record implements Recorder. Figures outside the catalog are dropped (the
// stack's alarms know only the catalog's names).
func (e *EMF) Record(_ context.Context, ev Event) {
	line := map[string]any{DimensionStack: e.stack, "msg": "metrics"}
	if ev.Job != "" {
		line["job"] = ev.Job
	}
	d := emfDirective{Namespace: e.namespace, Dimensions: [][]string{{DimensionStack}}}
	for _, v := range ev.Values {
		unit, ok := Units[v.Name]
		if !ok {
			continue
		}
		if _, dup := line[v.Name]; dup {
			continue
		}
		d.Metrics = append(d.Metrics, emfMetric{Name: v.Name, Unit: unit})
		line[v.Name] = v.Value
	}
	if len(d.Metrics) == 0 {
		return
	}
	line["_aws"] = emfMeta{Timestamp: e.now().UnixMilli(), CloudWatchMetrics: []emfDirective{d}}
	b, err := json.Marshal(line)
	if err != nil {
		return
	}
	b = append(b, '\n')
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.Write(b)
}
