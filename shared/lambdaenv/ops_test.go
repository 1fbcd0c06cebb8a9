package lambdaenv

import (
	"strings"
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/settings"
)

func TestLoadQueueAndMetrics(t *testing.T) {
	base := map[string]string{settings.EnvTable: "t", settings.EnvBucket: "b", settings.EnvStateMachine: "arn:sm"}
	cases := []struct {
		name    string
		role    Role
		env     map[string]string
		running int
		stack   string
		err     string
	}{
		{name: "defaults", role: RoleTask, env: map[string]string{settings.EnvSourceDir: "/d"}, running: settings.DefaultMaxRunningJobs, stack: "bulkfhir"},
		{name: "set", role: RoleTask, env: map[string]string{settings.EnvSourceDir: "/d", settings.EnvMaxRunningJobs: "12", settings.EnvMetricsStack: "prod"}, running: 12, stack: "prod"},
		{name: "off", role: RoleTask, env: map[string]string{settings.EnvSourceDir: "/d", settings.EnvMaxRunningJobs: "0"}, running: 0, stack: "bulkfhir"},
		{name: "not a number", role: RoleTask, env: map[string]string{settings.EnvSourceDir: "/d", settings.EnvMaxRunningJobs: "many"}, err: settings.EnvMaxRunningJobs},
		{name: "dispatch reads no source", role: RoleDispatch, env: map[string]string{}, running: settings.DefaultMaxRunningJobs, stack: "bulkfhir"},
		{name: "dispatch needs the state machine", role: RoleDispatch, env: map[string]string{settings.EnvStateMachine: ""}, err: settings.EnvStateMachine},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{}
			for k, v := range base {
				env[k] = v
			}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := Load(func(k string) string { return env[k] }, tc.role)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one naming %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.MaxRunningJobs != tc.running || c.MetricsStack != tc.stack || c.MetricsNamespace != settings.DefaultMetricsNamespace {
				t.Errorf("got %d %q %q, want %d %q", c.MaxRunningJobs, c.MetricsStack, c.MetricsNamespace, tc.running, tc.stack)
			}
			if tc.role == RoleDispatch && (!c.StatusOnly || c.SourceDir != "") {
				t.Errorf("dispatch: StatusOnly %v, source %q", c.StatusOnly, c.SourceDir)
			}
		})
	}
}
