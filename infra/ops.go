package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/jsii-runtime-go"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

// OpsProps are the settings of operating the stack (issue 16): the global
// admission limit, reserved concurrency, alarms.
type OpsProps struct {
	// MaxRunningJobs (bulkfhir:maxRunningJobs) exports run at once;
	// later kick-offs wait as accepted, in kick-off order. Default 5.
	MaxRunningJobs int
	// MaxLiveJobs (bulkfhir:maxLiveJobs) caps one client's queued and
	// running exports (429 beyond). Default 20.
	MaxLiveJobs int
	// KickoffConcurrency and StatusConcurrency are the reserved
	// concurrency of the API functions, so exports can never take the
	// capacity kick-offs and status polls need. Default 10 each; -1
	// (context value 0) reserves none.
	KickoffConcurrency, StatusConcurrency int
	// ExportConcurrency caps (reserves) the export function's concurrency.
	// Default MaxRunningJobs × MaxConcurrency, exactly what the running
	// jobs' Distributed Maps can use at once; -1 (context 0): no cap.
	ExportConcurrency int
	// AlarmEmail (bulkfhir:alarmEmail) subscribes an address to the
	// alarms' SNS topic. Empty: the topic exists, without subscription.
	AlarmEmail string
	// StuckAfter (bulkfhir:stuckAfter) is how old the oldest running
	// export may be before the stuck-export alarm fires. Default 6h.
	StuckAfter time.Duration
	// Profile is "" or "production" (profile.go).
	Profile string
}

func (o OpsProps) withDefaults(maxConcurrency int) OpsProps {
	if o.MaxRunningJobs <= 0 {
		o.MaxRunningJobs = settings.DefaultMaxRunningJobs
	}
	if o.MaxLiveJobs <= 0 {
		o.MaxLiveJobs = defaultMaxLiveJobs
	}
	if o.KickoffConcurrency == 0 {
		o.KickoffConcurrency = 10
	}
	if o.StatusConcurrency == 0 {
		o.StatusConcurrency = 10
	}
	if o.ExportConcurrency == 0 {
		o.ExportConcurrency = o.MaxRunningJobs * maxConcurrency
	}
	if o.StuckAfter <= 0 {
		o.StuckAfter = 6 * time.Hour
	}
	return o
}

// opsFromContext reads the OpsProps from the bulkfhir:* context.
func opsFromContext(str func(string) string) (OpsProps, error) {
	var o OpsProps
	num := func(k string, dst *int, zeroMeansNone bool) error {
		v := str(k)
		if v == "" {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("context bulkfhir:%s=%q is not a whole number", k, v)
		}
		if n == 0 && zeroMeansNone {
			n = -1
		}
		*dst = n
		return nil
	}
	for _, f := range []struct {
		k    string
		dst  *int
		none bool
	}{
		{"maxRunningJobs", &o.MaxRunningJobs, false},
		{"maxLiveJobs", &o.MaxLiveJobs, false},
		{"kickoffConcurrency", &o.KickoffConcurrency, true},
		{"statusConcurrency", &o.StatusConcurrency, true},
		{"exportConcurrency", &o.ExportConcurrency, true},
	} {
		if err := num(f.k, f.dst, f.none); err != nil {
			return o, err
		}
	}
	if v := str("stuckAfter"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("context bulkfhir:stuckAfter=%q is not a positive duration", v)
		}
		o.StuckAfter = d
	}
	o.AlarmEmail = str("alarmEmail")
	o.Profile = str("profile")
	return o, nil
}

// ops adds what running the stack needs: the dispatch function that starts
// queued jobs (on every ended execution and every minute), the queue's
// settings and permissions, reserved concurrency, and the dashboard and
// alarms (dashboard.go).
func (s *Stack) ops(props StackProps) {
	o := props.OpsProps
	env := map[string]*string{
		settings.EnvTable:          s.Table.TableName(),
		settings.EnvBucket:         s.Bucket.BucketName(),
		settings.EnvBucketPrefix:   jsii.String(exportPrefix),
		settings.EnvRetention:      jsii.String(props.Retention.String()),
		settings.EnvMaxJobDuration: jsii.String(props.MaxJobDuration.String()),
		settings.EnvStateMachine:   s.StateMachine.StateMachineArn(),
	}
	s.newFunction(function{"dispatch", 256, awscdk.Duration_Minutes(jsii.Number(1))}, props, env)
	for _, name := range []string{"kickoff", "status", "plan", "export", "finalize", "fail", "dispatch"} {
		fn := s.Functions[name]
		fn.AddEnvironment(jsii.String(settings.EnvMaxRunningJobs), jsii.String(strconv.Itoa(o.MaxRunningJobs)), nil)
		fn.AddEnvironment(jsii.String(settings.EnvMaxLiveJobs), jsii.String(strconv.Itoa(o.MaxLiveJobs)), nil)
		fn.AddEnvironment(jsii.String(settings.EnvMetricsNamespace), jsii.String(metricsNamespace), nil)
		// The stack's name as a literal (not a Ref): SAM can only pass
		// variables it can resolve.
		fn.AddEnvironment(jsii.String(settings.EnvMetricsStack), s.Stack.StackName(), nil)
	}
	if props.AwsEndpointURL != "" {
		s.Functions["dispatch"].AddEnvironment(jsii.String("AWS_ENDPOINT_URL"), jsii.String(props.AwsEndpointURL), nil)
	}

	// The queue (dynamostore/queue.go): a kick-off enqueues and dispatches;
	// a cancel removes from the queue and dispatches; dispatching is a
	// transaction of a place Put, a queue item Delete and a ConditionCheck
	// of the job, then StartExecution; a start that fails marks the job
	// failed.
	table := s.Table.TableArn()
	s.allow("kickoff", []string{"dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"}, table)
	s.allow("status", []string{"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"}, table)
	s.allow("status", []string{"states:StartExecution"}, s.StateMachine.StateMachineArn())
	s.allow("dispatch", []string{"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
		"dynamodb:Query", "dynamodb:ConditionCheckItem"}, table)
	s.allow("dispatch", []string{"states:StartExecution"}, s.StateMachine.StateMachineArn())
	if key := s.Bucket.EncryptionKey(); key != nil {
		s.allow("dispatch", []string{"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"}, key.KeyArn())
	}

	// Every ended execution frees a running place; the schedule is the
	// safety net (a lost event, a start that failed) and reports the ages
	// the stuck-export alarm watches.
	ended := awsevents.NewRule(s.Stack, jsii.String("ExecutionEndedDispatch"), &awsevents.RuleProps{
		Description: jsii.String("bulkfhir: an export execution ended, so a running place is free: start the next queued export"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings("aws.states"),
			DetailType: jsii.Strings(settings.StatusChangeDetailType),
			Detail: &map[string]any{
				"status":          []string{"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"},
				"stateMachineArn": []*string{s.StateMachine.StateMachineArn()},
			},
		},
	})
	sweep := awsevents.NewRule(s.Stack, jsii.String("QueueSweep"), &awsevents.RuleProps{
		Description: jsii.String("bulkfhir: every minute, start queued exports into free places and report the oldest running export's age"),
		Schedule:    awsevents.Schedule_Rate(awscdk.Duration_Minutes(jsii.Number(1))),
	})
	for _, r := range []awsevents.Rule{ended, sweep} {
		r.AddTarget(awseventstargets.NewLambdaFunction(s.Functions["dispatch"], &awseventstargets.LambdaFunctionProps{
			RetryAttempts: jsii.Number(4),
			MaxEventAge:   awscdk.Duration_Hours(jsii.Number(1)),
		}))
	}

	reserve := func(name string, n int) {
		if n > 0 {
			s.Functions[name].Node().DefaultChild().(awslambda.CfnFunction).SetReservedConcurrentExecutions(jsii.Number(n))
		}
	}
	reserve("kickoff", o.KickoffConcurrency)
	reserve("status", o.StatusConcurrency)
	reserve("export", o.ExportConcurrency)
	// The steps each running job calls once (Plan, Finalize, Fail) never
	// need more than the running limit; the token endpoint and the
	// authorizer share the kick-off's budget.
	for _, name := range []string{"plan", "finalize", "fail"} {
		reserve(name, o.MaxRunningJobs)
	}
	for _, name := range []string{"token", "authorizer"} {
		if s.Functions[name] != nil {
			reserve(name, o.KickoffConcurrency)
		}
	}
	// One dispatcher at a time is plenty (dispatching is safe under
	// concurrency all the same); throttled events are retried by Lambda.
	reserve("dispatch", 1)
	s.dashboard(props)
}

// defaultMaxLiveJobs is the per-client cap (export.DefaultMaxLiveJobsPerOwner;
// infra imports no core package).
const defaultMaxLiveJobs = settings.DefaultMaxLiveJobs

// metricsNamespace is the CloudWatch namespace of the functions' EMF lines.
const metricsNamespace = settings.DefaultMetricsNamespace
