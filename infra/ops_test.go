package main

import (
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/metrics"
)

// TestReservedConcurrency: the API functions have reserved concurrency, so
// exports cannot take what kick-offs and status polls need, and the export
// function's is capped at what the running jobs' maps can use at once.
func TestReservedConcurrency(t *testing.T) {
	s := base(t) // MaxConcurrency 7, maxRunningJobs default 5
	want := map[string]float64{"kickoff": 10, "status": 10, "export": 35, "dispatch": 1, "plan": 5, "finalize": 5, "fail": 5, "token": 10, "authorizer": 10}
	for name, n := range want {
		p := props(s.resources[s.logicalID(t, "AWS::Lambda::Function", title(name))])
		if got, _ := p["ReservedConcurrentExecutions"].(float64); got != n {
			t.Errorf("%s reserved concurrency = %v, want %v", name, p["ReservedConcurrentExecutions"], n)
		}
		env := p["Environment"].(map[string]any)["Variables"].(map[string]any)
		if _, task := want[name]; task && name != "token" && name != "authorizer" && (env["BULKFHIR_MAX_RUNNING_JOBS"] != "5" || env["BULKFHIR_MAX_LIVE_JOBS"] != "20") {
			t.Errorf("%s: BULKFHIR_MAX_RUNNING_JOBS = %v, BULKFHIR_MAX_LIVE_JOBS = %v", name, env["BULKFHIR_MAX_RUNNING_JOBS"], env["BULKFHIR_MAX_LIVE_JOBS"])
		}
	}
	tuned, err := propsFromContext(func(k string) any {
		return map[string]any{"bulkfhir:maxRunningJobs": "3", "bulkfhir:kickoffConcurrency": "0", "bulkfhir:exportConcurrency": "12", "bulkfhir:maxLiveJobs": "7"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	tuned.BuildDir = fakeBuild(t)
	ts := synth(t, tuned, nil)
	for name, n := range map[string]any{"kickoff": nil, "status": 10.0, "export": 12.0, "plan": 3.0} {
		p := props(ts.resources[ts.logicalID(t, "AWS::Lambda::Function", title(name))])
		if p["ReservedConcurrentExecutions"] != n {
			t.Errorf("tuned %s reserved concurrency = %v, want %v", name, p["ReservedConcurrentExecutions"], n)
		}
		if env := p["Environment"].(map[string]any)["Variables"].(map[string]any); env["BULKFHIR_MAX_LIVE_JOBS"] != "7" || env["BULKFHIR_MAX_RUNNING_JOBS"] != "3" {
			t.Errorf("tuned %s: limits %v %v", name, env["BULKFHIR_MAX_LIVE_JOBS"], env["BULKFHIR_MAX_RUNNING_JOBS"])
		}
	}
	if _, err := propsFromContext(func(k string) any { return map[string]any{"bulkfhir:maxRunningJobs": "many"}[k] }); err == nil {
		t.Error("bulkfhir:maxRunningJobs=many was accepted")
	}
}

// TestDispatchRules: the dispatch function runs on every ended execution of
// the state machine and every minute.
func TestDispatchRules(t *testing.T) {
	s := base(t)
	dispatch := s.logicalID(t, "AWS::Lambda::Function", "Dispatch")
	var ended, schedule bool
	for _, r := range s.ofType("AWS::Events::Rule") {
		p := props(r)
		if !strings.Contains(js(p["Targets"]), dispatch) {
			continue
		}
		if pat := js(p["EventPattern"]); strings.Contains(pat, `"SUCCEEDED","FAILED","TIMED_OUT","ABORTED"`) && strings.Contains(pat, "ExportStateMachine") {
			ended = true
		}
		if p["ScheduleExpression"] == "rate(1 minute)" {
			schedule = true
		}
	}
	if !ended || !schedule {
		t.Errorf("dispatch rules: on ended executions %v, every minute %v", ended, schedule)
	}
}

// TestDashboardAndAlarms: the dashboard shows throughput, jobs by state,
// errors, latency, throttles and concurrency; each alarm watches its metric
// and notifies the SNS topic, which has the alarm email subscribed.
func TestDashboardAndAlarms(t *testing.T) {
	s := synth(t, StackProps{BuildDir: fakeBuild(t), OpsProps: OpsProps{AlarmEmail: "ops@example.org"}}, nil)
	dashboards := s.ofType("AWS::CloudWatch::Dashboard")
	if len(dashboards) != 1 {
		t.Fatalf("%d dashboards, want 1", len(dashboards))
	}
	for _, d := range dashboards {
		body := js(props(d)["DashboardBody"])
		for _, want := range []string{"Throughput", "Jobs by state", "Errors", "Kick-off and status latency", "Lambda throttles", "Lambda concurrency",
			metrics.ChunkResources, metrics.ExportsCompleted, metrics.RunningJobs, metrics.QueuedJobs, "ConcurrentExecutions", "Throttles", "Latency"} {
			if !strings.Contains(body, want) {
				t.Errorf("dashboard has no %q", want)
			}
		}
	}
	topic := s.logicalID(t, "AWS::SNS::Topic", "AlarmTopic")
	subs := s.ofType("AWS::SNS::Subscription")
	if len(subs) != 1 {
		t.Fatalf("%d subscriptions, want 1", len(subs))
	}
	for _, sub := range subs {
		if p := props(sub); p["Protocol"] != "email" || p["Endpoint"] != "ops@example.org" || !strings.Contains(js(p["TopicArn"]), topic) {
			t.Errorf("subscription %v", p)
		}
	}
	want := map[string]string{
		alarmFailed:          `"MetricName":"ExportsFailed","Namespace":"bulkfhir"`,
		alarmStuck:           `"MetricName":"OldestRunningJobAge","Namespace":"bulkfhir"`,
		alarmAPI5xx:          `"MetricName":"5xx","Namespace":"AWS/ApiGateway"`,
		alarmLambdaErrors:    `"MetricName":"Errors","Namespace":"AWS/Lambda"`,
		alarmLambdaThrottles: `"MetricName":"Throttles","Namespace":"AWS/Lambda"`,
		alarmDynamoThrottles: `"MetricName":"ThrottledRequests","Namespace":"AWS/DynamoDB"`,
	}
	alarms := s.ofType("AWS::CloudWatch::Alarm")
	if len(alarms) != len(want) {
		t.Errorf("%d alarms, want %d", len(alarms), len(want))
	}
	for id, metric := range want {
		p := props(s.resources[s.logicalID(t, "AWS::CloudWatch::Alarm", "Alarm"+id)])
		all := js(p)
		if !strings.Contains(strings.ReplaceAll(all, " ", ""), metric) {
			t.Errorf("alarm %s does not watch %s: %s", id, metric, all)
		}
		if !strings.Contains(js(p["AlarmActions"]), topic) {
			t.Errorf("alarm %s does not notify the topic: %v", id, p["AlarmActions"])
		}
		if !strings.Contains(all, "docs/operations.md#"+strings.ToLower(id)) {
			t.Errorf("alarm %s does not point to its runbook", id)
		}
	}
	stuck := props(s.resources[s.logicalID(t, "AWS::CloudWatch::Alarm", "Alarm"+alarmStuck)])
	if stuck["Threshold"] != 6*3600.0 {
		t.Errorf("stuck-export threshold = %v, want 6h in seconds", stuck["Threshold"])
	}
}
