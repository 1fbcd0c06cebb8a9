package dynamostore_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/exporttest"
)

var (
	startErr error
	tables   atomic.Int32
)

func TestMain(m *testing.M) { os.Exit(awstest.Main(m, &startErr, "DYNAMODB")) }

func client(t *testing.T) *dynamodb.Client {
	t.Helper()
	awstest.Handle(t, startErr)
	cfg, err := awstest.Config(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// DynamoDB Local's error replies carry no valid checksum.
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
}

func newStore(t *testing.T) (*dynamostore.Store, *dynamodb.Client, string) {
	t.Helper()
	db := client(t)
	name := fmt.Sprintf("jobs-%d", tables.Add(1))
	if err := dynamostore.CreateTable(context.Background(), db, name); err != nil {
		t.Fatal(err)
	}
	return dynamostore.New(db, name, time.Hour), db, name
}

func TestContract(t *testing.T) {
	exporttest.JobStoreContract(t, func(t *testing.T) export.JobStore {
		s, _, _ := newStore(t)
		s.SetPageSize(25) // the contract's many units then take several pages
		return s
	})
}

// TestJobItemStaysSmall: the job item is the same size after a thousand
// units saved their progress and files, and far under the item limit.
func TestJobItemStaysSmall(t *testing.T) {
	s, db, table := newStore(t)
	ctx := context.Background()
	s.Create(ctx, &export.Job{ID: "j", Owner: "o", Status: export.StatusAccepted, ExpiresAt: time.Now().Add(time.Hour)})
	s.Transition(ctx, "j", export.Transition{From: []export.Status{export.StatusAccepted}, To: export.StatusInProgress,
		Plan: &export.PlanRef{Key: "j/plan.json", Units: 1000, Types: []string{"Observation"}}})
	size := func() int {
		out, err := db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table),
			Key: map[string]types.AttributeValue{dynamostore.AttrPK: &types.AttributeValueMemberS{Value: "JOB#j"}, dynamostore.AttrSK: &types.AttributeValueMemberS{Value: "JOB"}}})
		if err != nil {
			t.Fatal(err)
		}
		return dynamostore.ItemSize(out.Item)
	}
	before := size()
	for i := 0; i < 1000; i++ {
		u := fmt.Sprintf("Observation.%04d", i)
		if err := s.SaveProgress(ctx, "j", u, export.UnitProgress{Resources: 1, Done: true, Cursor: &export.Cursor{Source: "1234567890", Seq: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if after := size(); after != before || after > 4096 {
		t.Errorf("job item: %d bytes before, %d after 1000 units; want unchanged and small", before, after)
	}
}

// TestItemLimitFires is the negative control of the item size measure:
// DynamoDB Local refuses an item over 400 KB, and ItemSize says so.
func TestItemLimitFires(t *testing.T) {
	_, db, table := newStore(t)
	it := map[string]types.AttributeValue{
		dynamostore.AttrPK: &types.AttributeValueMemberS{Value: "JOB#big"},
		dynamostore.AttrSK: &types.AttributeValueMemberS{Value: "JOB"},
		"blob":             &types.AttributeValueMemberS{Value: strings.Repeat("x", dynamostore.MaxItemBytes)},
	}
	if n := dynamostore.ItemSize(it); n <= dynamostore.MaxItemBytes {
		t.Errorf("ItemSize = %d, want over %d", n, dynamostore.MaxItemBytes)
	}
	_, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: it})
	if err == nil || !strings.Contains(err.Error(), "size") {
		t.Errorf("PutItem of %d bytes = %v, want the item size error", dynamostore.ItemSize(it), err)
	}
	it["blob"] = &types.AttributeValueMemberS{Value: strings.Repeat("x", dynamostore.MaxItemBytes-100)}
	if _, err := db.PutItem(context.Background(), &dynamodb.PutItemInput{TableName: aws.String(table), Item: it}); err != nil {
		t.Errorf("PutItem of %d bytes = %v, want accepted", dynamostore.ItemSize(it), err)
	}
}

func TestCappedCreator(t *testing.T) {
	exporttest.CappedCreatorContract(t, func(t *testing.T) export.JobStore {
		s, _, _ := newStore(t)
		return s
	})
}

func TestItemsCarryTTL(t *testing.T) {
	s, db, table := newStore(t)
	ctx := context.Background()
	exp := time.Now().Add(3 * time.Hour).Truncate(time.Second)
	if err := s.Create(ctx, &export.Job{ID: "j", Owner: "o", Status: export.StatusAccepted, ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	s.PutFile(ctx, "j", export.File{Key: "j/u/P.0000.ndjson", Count: 1})
	out, err := db.Scan(ctx, &dynamodb.ScanInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 2 {
		t.Fatalf("items = %d, want a job and a file", len(out.Items))
	}
	for _, it := range out.Items {
		v, ok := it[dynamostore.AttrTTL].(*types.AttributeValueMemberN)
		if !ok {
			t.Errorf("item %v has no numeric %s", it[dynamostore.AttrSK], dynamostore.AttrTTL)
		}
		if it[dynamostore.AttrSK].(*types.AttributeValueMemberS).Value == "JOB" && v.Value != fmt.Sprint(exp.Unix()) {
			t.Errorf("job TTL = %s, want %d", v.Value, exp.Unix())
		}
	}
	ttl, err := db.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	if err != nil || ttl.TimeToLiveDescription.AttributeName == nil || *ttl.TimeToLiveDescription.AttributeName != dynamostore.AttrTTL {
		t.Errorf("TTL = %+v, %v", ttl, err)
	}
}

func TestQueue(t *testing.T) {
	exporttest.QueueContract(t, func(t *testing.T) export.JobStore {
		s, _, _ := newStore(t)
		return s
	})
}
