package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// Deleter is the client the retention sweep deletes records with.
type Deleter interface {
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
}

// ExpiringStore is the store with the retention sweep's delete
// (retention.Jobs).
type ExpiringStore struct {
	*Store
	del Deleter
}

// WithDeleter returns the store able to delete expired jobs' records with
// del (the same DynamoDB client).
func (s *Store) WithDeleter(del Deleter) *ExpiringStore { return &ExpiringStore{Store: s, del: del} }

// DeleteExpired deletes a job's records if it has ended and, unless it was
// cancelled, expired by now: the job item first, with a condition on its
// status and expiry (a live or unexpired job is kept, false), then its
// unit and file items.
func (e *ExpiringStore) DeleteExpired(ctx context.Context, id string, now time.Time) (bool, error) {
	_, err := e.del.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:           aws.String(e.table),
		Key:                 jobKey(id),
		ConditionExpression: aws.String("#st = :cancelled OR (#st IN (:completed, :failed) AND #ttl < :now)"),
		ExpressionAttributeNames: map[string]string{
			"#st": "status", "#ttl": AttrTTL,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":cancelled": s(string(export.StatusCancelled)), ":completed": s(string(export.StatusCompleted)),
			":failed": s(string(export.StatusFailed)), ":now": n(now.Unix()),
		},
	})
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete job %s: %w", id, err)
	}
	in := &dynamodb.QueryInput{
		TableName:                aws.String(e.table),
		KeyConditionExpression:   aws.String("#pk = :pk"),
		ExpressionAttributeNames: map[string]string{"#pk": AttrPK, "#sk": AttrSK},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": jobKey(id)[AttrPK],
		},
		ProjectionExpression: aws.String("#pk, #sk"),
	}
	p := dynamodb.NewQueryPaginator(e.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return true, fmt.Errorf("list records of %s: %w", id, err)
		}
		for _, it := range page.Items {
			if _, err := e.del.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(e.table),
				Key: map[string]types.AttributeValue{AttrPK: it[AttrPK], AttrSK: it[AttrSK]}}); err != nil {
				return true, fmt.Errorf("delete a record of %s: %w", id, err)
			}
		}
	}
	return true, nil
}
