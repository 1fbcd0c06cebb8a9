package bulkclient_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/dirstore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
	"github.com/bulkfhir/bulkfhir/shared/localrunner"
)

// Run kicks off an export, polls its status URL and downloads every file
// into OutDir. Here the server is bulkfhir's own, in this process: the
// HTTP API, the local runner and the embedded file store, over three
// resources held in memory.
func ExampleClient_Run() {
	ctx := context.Background()
	state, _ := os.MkdirTemp("", "bulkclient-example")
	defer os.RemoveAll(state)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	source := &exporttest.Source{Lines: map[string][]string{
		"Patient":     {`{"resourceType":"Patient","id":"a"}`, `{"resourceType":"Patient","id":"b"}`},
		"Observation": {`{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/a"}}`},
	}}
	jobs := exporttest.NewJobStore()
	files, err := dirstore.Open(filepath.Join(state, "files"), filepath.Join(state, "link-secret"))
	if err != nil {
		fmt.Println(err)
		return
	}
	steps := export.NewSteps(jobs, files, source, export.Config{}, quiet)
	runner := localrunner.New(steps, jobs, localrunner.Options{}, quiet)
	defer runner.Shutdown(ctx)
	svc := export.NewService(jobs, files, runner, source, export.Config{}, quiet)
	server := httptest.NewServer(api.New(svc, api.Config{Files: files, Log: quiet}))
	defer server.Close()

	client, err := bulkclient.New(bulkclient.Options{
		Server: server.URL + "/fhir",
		Types:  []string{"Patient", "Observation"},
		OutDir: filepath.Join(state, "out"),
	}, nil, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	sum, err := client.Run(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("resources:", sum.Resources)
	fmt.Println("Patient:", sum.Types["Patient"].Resources, "Observation:", sum.Types["Observation"].Resources)
	// Output:
	// resources: 3
	// Patient: 2 Observation: 1
}
