package main

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsdynamodb"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssnssubscriptions"
	"github.com/aws/jsii-runtime-go"

	"github.com/bulkfhir/bulkfhir/shared/metrics"
)

// opsFunctions are the functions the dashboard and the Lambda alarms watch.
var opsFunctions = []string{"kickoff", "status", "plan", "export", "finalize", "fail", "dispatch"}

// Alarm names (without the stack name prefix), as docs/operations.md
// describes them.
const (
	alarmFailed          = "ExportsFailed"
	alarmStuck           = "ExportStuck"
	alarmAPI5xx          = "Api5xx"
	alarmLambdaErrors    = "LambdaErrors"
	alarmLambdaThrottles = "LambdaThrottles"
	alarmDynamoThrottles = "DynamoDBThrottles"
)

// own is one of the functions' EMF figures of this stack.
func (s *Stack) own(name, stat string, period awscdk.Duration) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(metricsNamespace),
		MetricName:    jsii.String(name),
		DimensionsMap: &map[string]*string{metrics.DimensionStack: s.Stack.StackName()},
		Statistic:     jsii.String(stat),
		Period:        period,
		Label:         jsii.String(name),
	})
}

// sumOver adds one Lambda metric of every watched function in one
// expression (one alarm for all of them).
func (s *Stack) sumOver(label string, metric func(name string) awscloudwatch.IMetric) awscloudwatch.MathExpression {
	using := map[string]awscloudwatch.IMetric{}
	expr := ""
	for i, name := range opsFunctions {
		id := fmt.Sprintf("m%d", i)
		using[id] = metric(name)
		if expr != "" {
			expr += "+"
		}
		expr += "FILL(" + id + ",0)"
	}
	return awscloudwatch.NewMathExpression(&awscloudwatch.MathExpressionProps{
		Expression: jsii.String(expr), UsingMetrics: &using, Label: jsii.String(label),
		Period: awscdk.Duration_Minutes(jsii.Number(5)),
	})
}

// dashboard makes the alarms (with their SNS topic) and the dashboard.
func (s *Stack) dashboard(props StackProps) {
	five := awscdk.Duration_Minutes(jsii.Number(5))
	topicProps := &awssns.TopicProps{
		DisplayName: jsii.String("bulkfhir alarms"),
		EnforceSSL:  jsii.Bool(true),
	}
	if key := s.Bucket.EncryptionKey(); key != nil {
		topicProps.MasterKey = key
	}
	s.AlarmTopic = awssns.NewTopic(s.Stack, jsii.String("AlarmTopic"), topicProps)
	// Publishers must use TLS (EnforceSSL alone adds the statement only
	// once the topic has a policy).
	s.AlarmTopic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("EnforceTLS"),
		Effect:     awsiam.Effect_DENY,
		Principals: &[]awsiam.IPrincipal{awsiam.NewAnyPrincipal()},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  &[]*string{s.AlarmTopic.TopicArn()},
		Conditions: &map[string]any{"Bool": map[string]any{"aws:SecureTransport": "false"}},
	}))
	if props.AlarmEmail != "" {
		s.AlarmTopic.AddSubscription(awssnssubscriptions.NewEmailSubscription(jsii.String(props.AlarmEmail), nil))
	}
	s.Alarms = map[string]awscloudwatch.Alarm{}
	alarm := func(id, what string, metric awscloudwatch.IMetric, threshold float64, periods float64) {
		a := awscloudwatch.NewAlarm(s.Stack, jsii.String("Alarm"+id), &awscloudwatch.AlarmProps{
			AlarmName:          join(awscdk.Aws_STACK_NAME(), jsii.String("-"+id)),
			AlarmDescription:   jsii.String(what + " See docs/operations.md#" + strings.ToLower(id) + "."),
			Metric:             metric,
			Threshold:          jsii.Number(threshold),
			EvaluationPeriods:  jsii.Number(periods),
			ComparisonOperator: awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
			TreatMissingData:   awscloudwatch.TreatMissingData_NOT_BREACHING,
		})
		a.AddAlarmAction(awscloudwatchactions.NewSnsAction(s.AlarmTopic))
		s.Alarms[id] = a
	}
	alarm(alarmFailed, "An export failed (its client got an OperationOutcome).", s.own(metrics.ExportsFailed, "Sum", five), 1, 1)
	alarm(alarmStuck, fmt.Sprintf("The oldest running export is older than %v (bulkfhir:stuckAfter).", props.StuckAfter),
		s.own(metrics.OldestRunningJobAge, "Maximum", five), props.StuckAfter.Seconds(), 2)
	var api5xx, apiLatency awscloudwatch.IMetric
	if s.RestApi != nil {
		api5xx = s.RestApi.MetricServerError(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")})
		apiLatency = s.RestApi.MetricLatency(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("p99")})
	} else {
		api5xx = s.Api.MetricServerError(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")})
		apiLatency = s.Api.MetricLatency(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("p99")})
	}
	alarm(alarmAPI5xx, "The API answered 5xx (a function error, timeout or throttle behind it).", api5xx, 5, 1)
	errorsSum := s.sumOver("Lambda errors", func(name string) awscloudwatch.IMetric {
		return s.Functions[name].MetricErrors(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")})
	})
	throttlesSum := s.sumOver("Lambda throttles", func(name string) awscloudwatch.IMetric {
		return s.Functions[name].MetricThrottles(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")})
	})
	alarm(alarmLambdaErrors, "A function of the stack returned errors (see its log group).", errorsSum, 1, 1)
	alarm(alarmLambdaThrottles, "A function of the stack was throttled (its reserved concurrency or the account's limit).", throttlesSum, 1, 1)
	dynamo := s.Table.MetricThrottledRequestsForOperations(&awsdynamodb.OperationsMetricOptions{
		Operations: &[]awsdynamodb.Operation{awsdynamodb.Operation_GET_ITEM, awsdynamodb.Operation_PUT_ITEM, awsdynamodb.Operation_UPDATE_ITEM,
			awsdynamodb.Operation_DELETE_ITEM, awsdynamodb.Operation_QUERY, awsdynamodb.Operation_TRANSACT_WRITE_ITEMS},
		Period: five,
	})
	alarm(alarmDynamoThrottles, "DynamoDB throttled requests to the jobs table.", dynamo, 1, 1)

	perFunction := func(metric func(name string) awscloudwatch.IMetric) *[]awscloudwatch.IMetric {
		var out []awscloudwatch.IMetric
		for _, name := range opsFunctions {
			out = append(out, metric(name))
		}
		return &out
	}
	graph := func(title string, left ...awscloudwatch.IMetric) awscloudwatch.GraphWidget {
		return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: &left, Width: jsii.Number(12)})
	}
	graphs := func(title string, left *[]awscloudwatch.IMetric) awscloudwatch.GraphWidget {
		return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: left, Width: jsii.Number(12)})
	}
	var alarms []awscloudwatch.IAlarm
	for _, id := range []string{alarmFailed, alarmStuck, alarmAPI5xx, alarmLambdaErrors, alarmLambdaThrottles, alarmDynamoThrottles} {
		alarms = append(alarms, s.Alarms[id])
	}
	s.Dashboard = awscloudwatch.NewDashboard(s.Stack, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: join(awscdk.Aws_STACK_NAME(), jsii.String("-operations")),
		Widgets: &[]*[]awscloudwatch.IWidget{
			{awscloudwatch.NewAlarmStatusWidget(&awscloudwatch.AlarmStatusWidgetProps{Title: jsii.String("Alarms"), Alarms: &alarms, Width: jsii.Number(24)})},
			{
				graph("Throughput: resources and bytes exported", s.own(metrics.ChunkResources, "Sum", five), s.own(metrics.ChunkBytes, "Sum", five)),
				graph("Jobs by state", s.own(metrics.ExportsAccepted, "Sum", five), s.own(metrics.ExportsStarted, "Sum", five),
					s.own(metrics.ExportsCompleted, "Sum", five), s.own(metrics.ExportsFailed, "Sum", five), s.own(metrics.ExportsCancelled, "Sum", five),
					s.own(metrics.RunningJobs, "Maximum", five), s.own(metrics.QueuedJobs, "Maximum", five)),
			},
			{
				graph("Errors", s.own(metrics.ExportsFailed, "Sum", five), api5xx, errorsSum,
					s.own(metrics.SourceRetries, "Sum", five), s.own(metrics.SourceThrottled, "Sum", five)),
				graph("Kick-off and status latency (p99)", apiLatency,
					s.Functions["kickoff"].MetricDuration(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("p99")}),
					s.Functions["status"].MetricDuration(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("p99")})),
			},
			{
				graphs("Lambda throttles", perFunction(func(name string) awscloudwatch.IMetric {
					return s.Functions[name].MetricThrottles(&awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Sum")})
				})),
				graphs("Lambda concurrency", perFunction(func(name string) awscloudwatch.IMetric {
					return s.Functions[name].Metric(jsii.String("ConcurrentExecutions"), &awscloudwatch.MetricOptions{Period: five, Statistic: jsii.String("Maximum")})
				})),
			},
			{
				graph("Queue and ages (seconds)", s.own(metrics.OldestRunningJobAge, "Maximum", five), s.own(metrics.OldestQueuedWait, "Maximum", five),
					s.own(metrics.QueueWait, "p90", five), s.own(metrics.JobDuration, "p90", five)),
				graph("Chunks", s.own(metrics.ChunkDuration, "p90", five), s.own(metrics.ChunkResourcesPerSecond, "Average", five), dynamo),
			},
		},
	})
}
