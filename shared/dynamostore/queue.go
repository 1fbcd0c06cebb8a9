package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// The global admission queue (export.Queue) lives in two partitions of the
// same table:
//   - pk "QUEUE", sk export.QueueKey (kick-off time, then id): one item per
//     waiting job, so a strongly consistent Query reads the queue in order;
//   - pk "RUNNING", sk "SLOT#<i>" (i < maxRunning): the running places,
//     each naming the job that holds it, kept exact as the per-owner slots
//     are (capped.go): a place is free when absent or held by a job that is
//     no longer live.
//
// Admission is one TransactWriteItems: the place Put (conditional on the
// place being free as seen), the Delete of the head's queue item
// (conditional on it still being there) and a ConditionCheck that the job
// is still accepted. Two dispatchers racing for the head or for a place
// cannot both win, so at most maxRunning live jobs are ever admitted.
const (
	queuePK   = "QUEUE"
	runningPK = "RUNNING"
)

var _ export.Queue = (*Store)(nil)

// Enqueue implements export.Queue.
func (st *Store) Enqueue(ctx context.Context, j *export.Job) error {
	_, err := st.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(st.table),
		Item: map[string]types.AttributeValue{
			AttrPK: s(queuePK), AttrSK: s(export.QueueKey(j)), "job": s(j.ID), AttrTTL: n(j.ExpiresAt.Unix()),
		},
	})
	if err != nil {
		return fmt.Errorf("enqueue job %s: %w", j.ID, err)
	}
	return nil
}

func queueItemKey(sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: s(queuePK), AttrSK: s(sk)}
}

// Remove implements export.Queue.
func (st *Store) Remove(ctx context.Context, j *export.Job) error {
	_, err := st.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(st.table), Key: queueItemKey(export.QueueKey(j)),
	})
	if err != nil {
		return fmt.Errorf("remove job %s from the queue: %w", j.ID, err)
	}
	return nil
}

// Ahead implements export.Queue: a strongly consistent count of the queue
// items before the job's.
func (st *Store) Ahead(ctx context.Context, j *export.Job) (int, bool, error) {
	mine := export.QueueKey(j)
	out, err := st.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(st.table), Key: queueItemKey(mine), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return 0, false, fmt.Errorf("queue position of %s: %w", j.ID, err)
	}
	if out.Item == nil {
		return 0, false, nil
	}
	ahead := 0
	p := dynamodb.NewQueryPaginator(st.db, &dynamodb.QueryInput{
		TableName:              aws.String(st.table),
		KeyConditionExpression: aws.String("pk = :pk AND sk < :mine"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": s(queuePK), ":mine": s(mine),
		},
		Select:         types.SelectCount,
		ConsistentRead: aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, false, fmt.Errorf("queue position of %s: %w", j.ID, err)
		}
		ahead += int(page.Count)
	}
	return ahead, true, nil
}

// head returns the first queue items (sk, job id), oldest first.
func (st *Store) head(ctx context.Context, limit int32) ([][2]string, error) {
	out, err := st.db.Query(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(st.table),
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(queuePK)},
		ConsistentRead:            aws.Bool(true),
		Limit:                     aws.Int32(limit),
	})
	if err != nil {
		return nil, fmt.Errorf("read the queue: %w", err)
	}
	var items [][2]string
	for _, it := range out.Items {
		items = append(items, [2]string{str(it, AttrSK), str(it, "job")})
	}
	return items, nil
}

// AdmitNext implements export.Queue.
func (st *Store) AdmitNext(ctx context.Context, maxRunning int) (string, error) {
	for round := 0; round < maxClaimRounds; round++ {
		items, err := st.head(ctx, 1)
		if err != nil || len(items) == 0 {
			return "", err
		}
		sk, id := items[0][0], items[0][1]
		job, err := st.Get(ctx, id)
		if errors.Is(err, export.ErrJobNotFound) || (err == nil && job.Status != export.StatusAccepted) {
			// Cancelled (or gone) while it waited: drop it.
			if _, err := st.db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(st.table), Key: queueItemKey(sk)}); err != nil {
				return "", fmt.Errorf("drop %s from the queue: %w", id, err)
			}
			continue
		}
		if err != nil {
			return "", err
		}
		free, err := st.freeSlots(ctx, runningPK, maxRunning)
		if err != nil {
			return "", err
		}
		if len(free) == 0 {
			return "", nil
		}
		sl := free[rand.IntN(len(free))]
		_, err = st.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
			TransactItems: []types.TransactWriteItem{
				{Put: st.slotPut(runningPK, sl, id, job.ExpiresAt.Unix())},
				{Delete: &types.Delete{
					TableName: aws.String(st.table), Key: queueItemKey(sk),
					ConditionExpression: aws.String("attribute_exists(" + AttrPK + ")"),
				}},
				{ConditionCheck: &types.ConditionCheck{
					TableName: aws.String(st.table), Key: jobKey(id),
					ConditionExpression:       aws.String("#status = :accepted"),
					ExpressionAttributeNames:  map[string]string{"#status": "status"},
					ExpressionAttributeValues: map[string]types.AttributeValue{":accepted": s(string(export.StatusAccepted))},
				}},
			},
		})
		var tc *types.TransactionCanceledException
		switch {
		case err == nil:
			return id, nil
		case errors.As(err, &tc):
			// Another dispatcher took the head or the place, or the job
			// was cancelled meanwhile: look again.
		default:
			return "", fmt.Errorf("admit job %s: %w", id, err)
		}
	}
	return "", &export.RetryableError{Msg: "admit: kept losing races for the queue's head"}
}

// Admitted implements export.Queue.
func (st *Store) Admitted(ctx context.Context) ([]string, error) {
	p := dynamodb.NewQueryPaginator(st.db, &dynamodb.QueryInput{
		TableName:                 aws.String(st.table),
		KeyConditionExpression:    aws.String("pk = :pk AND begins_with(sk, :slot)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(runningPK), ":slot": s(slotPrefix)},
		ConsistentRead:            aws.Bool(true),
	})
	var ids []string
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list running places: %w", err)
		}
		for _, it := range page.Items {
			id := str(it, "job")
			if j, err := st.Get(ctx, id); err == nil && j.Status.Live() {
				ids = append(ids, id)
			}
		}
	}
	return ids, nil
}

// Waiting implements export.Queue.
func (st *Store) Waiting(ctx context.Context) (int, time.Time, error) {
	p := dynamodb.NewQueryPaginator(st.db, &dynamodb.QueryInput{
		TableName:                 aws.String(st.table),
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(queuePK)},
		Select:                    types.SelectCount,
		ConsistentRead:            aws.Bool(true),
	})
	total := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("count the queue: %w", err)
		}
		total += int(page.Count)
	}
	items, err := st.head(ctx, 1)
	if err != nil || len(items) == 0 {
		return total, time.Time{}, err
	}
	var nanos int64
	fmt.Sscanf(items[0][0], "%020d", &nanos)
	return total, time.Unix(0, nanos).UTC(), nil
}
