package dynamoauth_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/dynamoauth"
	"github.com/bulkfhir/bulkfhir/shared/smartauthtest"
)

var (
	startErr error
	tables   atomic.Int32
)

func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "DYNAMODB")) }

// TestContract runs the store contract on DynamoDB Local: conditional
// writes decide replays, as on DynamoDB.
func TestContract(t *testing.T) {
	smartauthtest.StoreContract(t, func(t *testing.T) smartauthtest.Store {
		awstest.Handle(t, startErr)
		cfg, err := awstest.Config(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		db := dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
		name := fmt.Sprintf("auth-%d", tables.Add(1))
		if err := dynamoauth.CreateTable(context.Background(), db, name); err != nil {
			t.Fatal(err)
		}
		return dynamoauth.New(db, name)
	})
}
