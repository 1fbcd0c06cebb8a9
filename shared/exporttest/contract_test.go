package exporttest_test

import (
	"testing"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

func TestFakeJobStore(t *testing.T) {
	exporttest.JobStoreContract(t, func(*testing.T) export.JobStore { return exporttest.NewJobStore() })
}

func TestFakeCappedCreator(t *testing.T) {
	exporttest.CappedCreatorContract(t, func(*testing.T) export.JobStore { return exporttest.NewJobStore() })
}

func TestQueueContract(t *testing.T) {
	exporttest.QueueContract(t, func(*testing.T) export.JobStore { return exporttest.NewJobStore() })
}
