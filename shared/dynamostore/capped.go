package dynamostore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

// The per-owner cap on live jobs is kept exact with slot items: an owner
// with a cap of N has at most N items (pk "OWNER#<owner>", sk
// "SLOT#<i>", i < N), each naming the job that holds it. A kick-off claims
// a free slot and creates its job in one TransactWriteItems: the slot Put
// is conditional on the slot being absent or still naming the job seen
// holding it (a job that is no longer live: live states never come back),
// and the job Put on the id being new. Two kick-offs racing for one slot
// cannot both win, so the cap holds under any concurrency; a job that
// leaves the live states (completed, failed, cancelled) frees its slot at
// once, without any change to Transition. Slot items carry no owner
// attribute, so the byOwner index never sees them.
const (
	ownerKeyPrefix = "OWNER#"
	slotPrefix     = "SLOT#"
	// maxClaimRounds bounds the retries of a kick-off that keeps losing
	// races for free slots; each lost race means another kick-off won one.
	maxClaimRounds = 64
)

var _ export.CappedCreator = (*Store)(nil)

// CreateCapped implements export.CappedCreator.
func (st *Store) CreateCapped(ctx context.Context, j *export.Job, maxLive int) error {
	for round := 0; round < maxClaimRounds; round++ {
		free, err := st.freeSlots(ctx, ownerKeyPrefix+j.Owner, maxLive)
		if err != nil {
			return err
		}
		if len(free) == 0 {
			return export.ErrTooManyLive
		}
		// A random free slot, so racing kick-offs mostly pick different ones.
		sl := free[rand.IntN(len(free))]
		err = st.claim(ctx, j, sl)
		var tc *types.TransactionCanceledException
		switch {
		case err == nil:
			return nil
		case errors.As(err, &tc):
			if r := tc.CancellationReasons; len(r) == 2 && aws.ToString(r[1].Code) == "ConditionalCheckFailed" {
				return export.ErrJobExists
			}
			// Another kick-off took the slot (its condition failed, or the
			// transactions conflicted): look again.
		default:
			return fmt.Errorf("create job %s: %w", j.ID, err)
		}
	}
	return &export.RetryableError{Msg: fmt.Sprintf("create job %s: kept losing races for a free slot", j.ID)}
}

type slot struct {
	index int
	// holder is the job id seen in the slot, "" for an absent slot.
	holder string
}

// freeSlots lists the slots of partition pk (an owner's, or the global
// running places) below maxLive that are absent or held by a job that is
// no longer live (or gone).
func (st *Store) freeSlots(ctx context.Context, pk string, maxLive int) ([]slot, error) {
	held := map[int]string{}
	p := dynamodb.NewQueryPaginator(st.db, &dynamodb.QueryInput{
		TableName:              aws.String(st.table),
		KeyConditionExpression: aws.String("pk = :pk AND begins_with(sk, :slot)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": s(pk), ":slot": s(slotPrefix),
		},
		ConsistentRead: aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list job slots of %s: %w", pk, err)
		}
		for _, it := range page.Items {
			i, err := strconv.Atoi(str(it, AttrSK)[len(slotPrefix):])
			if err == nil {
				held[i] = str(it, "job")
			}
		}
	}
	var free []slot
	for i := 0; i < maxLive; i++ {
		holder, ok := held[i]
		if !ok {
			free = append(free, slot{index: i})
			continue
		}
		job, err := st.Get(ctx, holder)
		if errors.Is(err, export.ErrJobNotFound) || (err == nil && !job.Status.Live()) {
			free = append(free, slot{index: i, holder: holder})
			continue
		}
		if err != nil {
			return nil, err
		}
	}
	return free, nil
}

// claim puts the slot and the job in one transaction.
func (st *Store) claim(ctx context.Context, j *export.Job, sl slot) error {
	_, err := st.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{
		TransactItems: []types.TransactWriteItem{
			{Put: st.slotPut(ownerKeyPrefix+j.Owner, sl, j.ID, j.ExpiresAt.Unix())},
			{Put: &types.Put{
				TableName: aws.String(st.table), Item: item(j),
				ConditionExpression: aws.String("attribute_not_exists(" + AttrPK + ")"),
			}},
		},
	})
	return err
}

// slotPut claims slot sl of partition pk for job: conditional on the slot
// being absent, or still held by the (no longer live) job seen in it.
func (st *Store) slotPut(pk string, sl slot, job string, expires int64) *types.Put {
	slotPut := &types.Put{
		TableName: aws.String(st.table),
		Item: map[string]types.AttributeValue{
			AttrPK: s(pk), AttrSK: s(slotPrefix + strconv.Itoa(sl.index)),
			"job": s(job), AttrTTL: n(expires),
		},
		ConditionExpression: aws.String("attribute_not_exists(" + AttrPK + ")"),
	}
	if sl.holder != "" {
		slotPut.ConditionExpression = aws.String("#job = :holder")
		slotPut.ExpressionAttributeNames = map[string]string{"#job": "job"}
		slotPut.ExpressionAttributeValues = map[string]types.AttributeValue{":holder": s(sl.holder)}
	}
	return slotPut
}
