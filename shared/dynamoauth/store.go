// Package dynamoauth holds the authorization server's state in a DynamoDB
// table of its own (the stack's auth table): one item per registered
// client (pk "client#ID") and one per used assertion id (pk "jti#…",
// written with a condition so a replay fails, and a TTL attribute so
// DynamoDB removes it once the assertion has expired; reads also ignore
// expired items, as TTL deletion lags).
package dynamoauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Attribute names (the stack defines the key and the TTL attribute).
const (
	AttrPK  = "pk"
	AttrTTL = "expiresAt"
	attrDoc = "client"
)

// API is the part of the DynamoDB client the store uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// Store is the client registry and replay cache on a DynamoDB table.
type Store struct {
	db    API
	table string
	now   func() time.Time
}

var (
	_ smartauth.ClientStore = (*Store)(nil)
	_ smartauth.ReplayCache = (*Store)(nil)
)

// New returns the store on table.
func New(db API, table string) *Store { return &Store{db: db, table: table, now: time.Now} }

func pk(v string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: &types.AttributeValueMemberS{Value: v}}
}

// Client implements smartauth.ClientStore.
func (s *Store) Client(ctx context.Context, id string) (*smartauth.Client, error) {
	out, err := s.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(s.table), Key: pk("client#" + id), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, fmt.Errorf("get client %q: %w", id, err)
	}
	if out.Item == nil {
		return nil, fmt.Errorf("client %q: %w", id, smartauth.ErrUnknownClient)
	}
	return decode(out.Item)
}

func decode(item map[string]types.AttributeValue) (*smartauth.Client, error) {
	doc, ok := item[attrDoc].(*types.AttributeValueMemberS)
	if !ok {
		return nil, errors.New("client item has no client document")
	}
	c := &smartauth.Client{}
	if err := json.Unmarshal([]byte(doc.Value), c); err != nil {
		return nil, fmt.Errorf("client item: %w", err)
	}
	return c, nil
}

// Put registers c (validated), replacing a client of the same id.
func (s *Store) Put(ctx context.Context, c *smartauth.Client) error {
	if err := c.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	item := pk("client#" + c.ClientID)
	item[attrDoc] = &types.AttributeValueMemberS{Value: string(raw)}
	if _, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(s.table), Item: item}); err != nil {
		return fmt.Errorf("put client %s: %w", c.ClientID, err)
	}
	return nil
}

// Delete removes a client; removing an unknown one is ErrUnknownClient.
func (s *Store) Delete(ctx context.Context, id string) error {
	_, err := s.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table), Key: pk("client#" + id),
		ConditionExpression:      aws.String("attribute_exists(#pk)"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK},
	})
	if errors.As(err, new(*types.ConditionalCheckFailedException)) {
		return fmt.Errorf("client %q: %w", id, smartauth.ErrUnknownClient)
	}
	if err != nil {
		return fmt.Errorf("delete client %s: %w", id, err)
	}
	return nil
}

// List returns the registered clients by id (a Scan: the table holds
// clients and short-lived jti items only).
func (s *Store) List(ctx context.Context) ([]*smartauth.Client, error) {
	var out []*smartauth.Client
	p := dynamodb.NewScanPaginator(s.db, &dynamodb.ScanInput{
		TableName:                 aws.String(s.table),
		FilterExpression:          aws.String("begins_with(#pk, :c)"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK},
		ExpressionAttributeValues: map[string]types.AttributeValue{":c": &types.AttributeValueMemberS{Value: "client#"}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list clients: %w", err)
		}
		for _, item := range page.Items {
			c, err := decode(item)
			if err != nil {
				return nil, err
			}
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ClientID < out[j].ClientID })
	return out, nil
}

// Claim implements smartauth.ReplayCache: a conditional put that succeeds
// when no item exists or the existing one has expired.
func (s *Store) Claim(ctx context.Context, key string, until time.Time) error {
	item := pk("jti#" + strings.ReplaceAll(key, "\x00", "#"))
	item[AttrTTL] = &types.AttributeValueMemberN{Value: strconv.FormatInt(until.Unix()+1, 10)}
	_, err := s.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(s.table), Item: item,
		ConditionExpression:       aws.String("attribute_not_exists(#pk) OR #ttl < :now"),
		ExpressionAttributeNames:  map[string]string{"#pk": AttrPK, "#ttl": AttrTTL},
		ExpressionAttributeValues: map[string]types.AttributeValue{":now": &types.AttributeValueMemberN{Value: strconv.FormatInt(s.now().Unix(), 10)}},
	})
	if errors.As(err, new(*types.ConditionalCheckFailedException)) {
		return fmt.Errorf("%w", smartauth.ErrReplay)
	}
	if err != nil {
		return fmt.Errorf("record jti: %w", err)
	}
	return nil
}

// CreateTable creates the auth table with the stack's schema (for
// emulators and local runs) and waits until it is active.
func CreateTable(ctx context.Context, db interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
}, name string) error {
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(AttrPK), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(AttrPK), KeyType: types.KeyTypeHash}},
	})
	if err != nil && !errors.As(err, new(*types.ResourceInUseException)) {
		return fmt.Errorf("create table %s: %w", name, err)
	}
	return dynamodb.NewTableExistsWaiter(db).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)}, 30*time.Second)
}
