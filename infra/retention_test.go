package main

import (
	"strings"
	"testing"
	"time"
)

// TestExpireSchedule: the expire function runs every five minutes with
// the table and bucket, and the lifecycle rule is only a backstop that
// cannot reach a live or unexpired job's files.
func TestExpireSchedule(t *testing.T) {
	s := base(t)
	fn := s.logicalID(t, "AWS::Lambda::Function", "Expire")
	env := js(props(s.resources[fn])["Environment"])
	for _, k := range []string{"BULKFHIR_TABLE", "BULKFHIR_BUCKET", "BULKFHIR_BUCKET_PREFIX"} {
		if !strings.Contains(env, k) {
			t.Errorf("expire: no %s in %s", k, env)
		}
	}
	if strings.Contains(env, "BULKFHIR_SOURCE") {
		t.Errorf("expire reads no source: %s", env)
	}
	if c := props(s.resources[fn])["ReservedConcurrentExecutions"]; c != 1.0 {
		t.Errorf("expire: reserved concurrency %v, want 1", c)
	}
	rule := props(s.resources[s.logicalID(t, "AWS::Events::Rule", "ExpireSchedule")])
	if rule["ScheduleExpression"] != "rate(5 minutes)" || !strings.Contains(js(rule["Targets"]), fn) {
		t.Errorf("schedule %v targets %s", rule["ScheduleExpression"], js(rule["Targets"]))
	}
	for _, tc := range []struct {
		job, retention time.Duration
		want           float64
	}{{24 * time.Hour, 2 * time.Hour, 2}, {24 * time.Hour, 30 * time.Hour, 3}, {time.Hour, time.Hour, 1}, {24 * time.Hour, 0, 1}} {
		got := BackstopDays(tc.job, tc.retention)
		if got != tc.want {
			t.Errorf("BackstopDays(%s, %s) = %v, want %v", tc.job, tc.retention, got, tc.want)
		}
		// Never before a file's job can have expired: an object is at
		// most job + retention old then.
		if time.Duration(got)*24*time.Hour < tc.job+tc.retention {
			t.Errorf("BackstopDays(%s, %s) = %v days: before the job expires", tc.job, tc.retention, got)
		}
	}
}
