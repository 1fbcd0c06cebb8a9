// Package dynamostore is the JobStore on DynamoDB: one table, where a job is
// the item (pk "JOB#<id>", sk "JOB") and each file it wrote is an item
// (pk "JOB#<id>", sk "FILE#<key>") beside it, so a job with many files never
// outgrows the 400 KB item limit. Status changes are UpdateItem calls with
// a ConditionExpression on the status; progress is one map entry per unit,
// set (never added) while the job is in progress. Every item carries the
// TTL attribute expiresAt (epoch seconds). The GSI "byOwner" counts a
// client's live jobs.
package dynamostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/fhir"
)

// API is the part of the DynamoDB client the store uses.
type API interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
}

// Names of the table's keys, index and TTL attribute.
const (
	AttrPK       = "pk"
	AttrSK       = "sk"
	AttrOwner    = "owner"
	AttrTTL      = "expiresAt"
	OwnerIndex   = "byOwner"
	jobSK        = "JOB"
	filePrefix   = "FILE#"
	jobKeyPrefix = "JOB#"
)

// Store is an export.JobStore on a DynamoDB table.
type Store struct {
	db    API
	table string
	// fileTTL is how long file records live (past any job's life: the job
	// item's own TTL decides when the job is gone).
	fileTTL time.Duration
	now     func() time.Time
}

var _ export.JobStore = (*Store)(nil)

// New returns a store on table. fileTTL bounds how long file records are
// kept (use the longest job duration plus the retention).
func New(db API, table string, fileTTL time.Duration) *Store {
	if fileTTL <= 0 {
		fileTTL = export.DefaultMaxJobDuration + export.DefaultRetention
	}
	return &Store{db: db, table: table, fileTTL: fileTTL, now: time.Now}
}

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

func jobKey(id string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{AttrPK: s(jobKeyPrefix + id), AttrSK: s(jobSK)}
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("dynamostore: marshal: " + err.Error())
	}
	return string(b)
}

// item encodes a new job.
func item(j *export.Job) map[string]types.AttributeValue {
	it := jobKey(j.ID)
	it["id"] = s(j.ID)
	it[AttrOwner] = s(j.Owner)
	it["status"] = s(string(j.Status))
	it["request"] = s(mustJSON(j.Request))
	it["requestUrl"] = s(j.RequestURL)
	it["transactionTime"] = s(ts(j.TransactionTime))
	it["createdAt"] = s(ts(j.CreatedAt))
	it["updatedAt"] = s(ts(j.UpdatedAt))
	it["expires"] = s(ts(j.ExpiresAt))
	it[AttrTTL] = n(j.ExpiresAt.Unix())
	it["progress"] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}
	if j.Units != nil {
		it["units"] = s(mustJSON(j.Units))
	}
	return it
}

func str(it map[string]types.AttributeValue, k string) string {
	if v, ok := it[k].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func parseTime(it map[string]types.AttributeValue, k string) (time.Time, error) {
	v := str(it, k)
	if v == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, v)
}

// decode reads a job item.
func decode(it map[string]types.AttributeValue) (*export.Job, error) {
	j := &export.Job{
		ID: str(it, "id"), Owner: str(it, AttrOwner), Status: export.Status(str(it, "status")),
		RequestURL: str(it, "requestUrl"), Progress: map[string]export.UnitProgress{},
	}
	var err error
	for _, f := range []struct {
		k string
		t *time.Time
	}{{"transactionTime", &j.TransactionTime}, {"createdAt", &j.CreatedAt}, {"updatedAt", &j.UpdatedAt}, {"expires", &j.ExpiresAt}} {
		if *f.t, err = parseTime(it, f.k); err != nil {
			return nil, fmt.Errorf("decode job %s: %s: %w", j.ID, f.k, err)
		}
	}
	if c, err := parseTime(it, "completedAt"); err != nil {
		return nil, fmt.Errorf("decode job %s: completedAt: %w", j.ID, err)
	} else if !c.IsZero() {
		j.CompletedAt = &c
	}
	if err := json.Unmarshal([]byte(str(it, "request")), &j.Request); err != nil {
		return nil, fmt.Errorf("decode job %s: request: %w", j.ID, err)
	}
	if u := str(it, "units"); u != "" {
		if err := json.Unmarshal([]byte(u), &j.Units); err != nil {
			return nil, fmt.Errorf("decode job %s: units: %w", j.ID, err)
		}
	}
	if o := str(it, "outcome"); o != "" {
		var oo fhir.OperationOutcome
		if err := json.Unmarshal([]byte(o), &oo); err != nil {
			return nil, fmt.Errorf("decode job %s: outcome: %w", j.ID, err)
		}
		j.Outcome = &oo
	}
	if v, ok := it["failStatus"].(*types.AttributeValueMemberN); ok {
		fs, _ := strconv.Atoi(v.Value)
		j.FailStatus = fs
	}
	if m, ok := it["progress"].(*types.AttributeValueMemberM); ok {
		for unit, v := range m.Value {
			sv, ok := v.(*types.AttributeValueMemberS)
			if !ok {
				continue
			}
			var p export.UnitProgress
			if err := json.Unmarshal([]byte(sv.Value), &p); err != nil {
				return nil, fmt.Errorf("decode job %s: progress %s: %w", j.ID, unit, err)
			}
			j.Progress[unit] = p
		}
	}
	return j, nil
}

func isConditionFailed(err error) bool {
	var c *types.ConditionalCheckFailedException
	return errors.As(err, &c)
}

// Create implements export.JobStore.
func (st *Store) Create(ctx context.Context, j *export.Job) error {
	_, err := st.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:           aws.String(st.table),
		Item:                item(j),
		ConditionExpression: aws.String("attribute_not_exists(" + AttrPK + ")"),
	})
	if isConditionFailed(err) {
		return export.ErrJobExists
	}
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.ID, err)
	}
	return nil
}

// Get implements export.JobStore (a strongly consistent read).
func (st *Store) Get(ctx context.Context, id string) (*export.Job, error) {
	out, err := st.db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: aws.String(st.table), Key: jobKey(id), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", id, err)
	}
	if out.Item == nil {
		return nil, export.ErrJobNotFound
	}
	return decode(out.Item)
}

// conflict explains a failed condition: the job is gone or in another state.
func (st *Store) conflict(ctx context.Context, id string) error {
	j, err := st.Get(ctx, id)
	if err != nil {
		return err
	}
	return &export.ConflictError{JobID: id, Current: j.Status}
}

// Transition implements export.JobStore.
func (st *Store) Transition(ctx context.Context, id string, t export.Transition) (*export.Job, error) {
	names := map[string]string{"#status": "status"}
	values := map[string]types.AttributeValue{
		":to":  s(string(t.To)),
		":now": s(ts(st.now())),
	}
	set := []string{"#status = :to", "updatedAt = :now"}
	var from []string
	for i, f := range t.From {
		k := fmt.Sprintf(":f%d", i)
		values[k] = s(string(f))
		from = append(from, k)
	}
	if t.Units != nil {
		set = append(set, "units = :units")
		values[":units"] = s(mustJSON(t.Units))
	}
	if t.CompletedAt != nil {
		set = append(set, "completedAt = :completed")
		values[":completed"] = s(ts(*t.CompletedAt))
	}
	if t.ExpiresAt != nil {
		set = append(set, "expires = :expires", "#ttl = :ttl")
		names["#ttl"] = AttrTTL
		values[":expires"] = s(ts(*t.ExpiresAt))
		values[":ttl"] = n(t.ExpiresAt.Unix())
	}
	if t.Outcome != nil {
		set = append(set, "outcome = :outcome", "failStatus = :failStatus")
		values[":outcome"] = s(string(t.Outcome.JSON()))
		values[":failStatus"] = n(int64(t.FailStatus))
	}
	out, err := st.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(st.table),
		Key:                       jobKey(id),
		UpdateExpression:          aws.String("SET " + strings.Join(set, ", ")),
		ConditionExpression:       aws.String("attribute_exists(" + AttrPK + ") AND #status IN (" + strings.Join(from, ", ") + ")"),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ReturnValues:              types.ReturnValueAllNew,
	})
	if isConditionFailed(err) {
		return nil, st.conflict(ctx, id)
	}
	if err != nil {
		return nil, fmt.Errorf("transition job %s to %s: %w", id, t.To, err)
	}
	return decode(out.Attributes)
}

// SaveProgress implements export.JobStore.
func (st *Store) SaveProgress(ctx context.Context, id, unitID string, p export.UnitProgress) error {
	_, err := st.db.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                aws.String(st.table),
		Key:                      jobKey(id),
		UpdateExpression:         aws.String("SET progress.#unit = :p, updatedAt = :now"),
		ConditionExpression:      aws.String("#status = :inprogress"),
		ExpressionAttributeNames: map[string]string{"#unit": unitID, "#status": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":p": s(mustJSON(p)), ":now": s(ts(st.now())), ":inprogress": s(string(export.StatusInProgress)),
		},
	})
	if isConditionFailed(err) {
		return st.conflict(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("save progress of %s/%s: %w", id, unitID, err)
	}
	return nil
}

// PutFile implements export.JobStore.
func (st *Store) PutFile(ctx context.Context, id string, f export.File) error {
	_, err := st.db.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(st.table),
		Item: map[string]types.AttributeValue{
			AttrPK: s(jobKeyPrefix + id), AttrSK: s(filePrefix + f.Key),
			"file": s(mustJSON(f)), AttrTTL: n(st.now().Add(st.fileTTL).Unix()),
		},
	})
	if err != nil {
		return fmt.Errorf("record file %s: %w", f.Key, err)
	}
	return nil
}

// Files implements export.JobStore.
func (st *Store) Files(ctx context.Context, id string) ([]export.File, error) {
	var out []export.File
	p := dynamodb.NewQueryPaginator(st.db, &dynamodb.QueryInput{
		TableName:              aws.String(st.table),
		KeyConditionExpression: aws.String("pk = :pk AND begins_with(sk, :file)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": s(jobKeyPrefix + id), ":file": s(filePrefix),
		},
		ConsistentRead: aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list files of %s: %w", id, err)
		}
		for _, it := range page.Items {
			var f export.File
			if err := json.Unmarshal([]byte(str(it, "file")), &f); err != nil {
				return nil, fmt.Errorf("decode file of %s: %w", id, err)
			}
			out = append(out, f)
		}
	}
	return out, nil
}

// CountLive implements export.JobStore (an eventually consistent index
// read, for reporting; kick-off enforces the cap with CreateCapped).
func (st *Store) CountLive(ctx context.Context, owner string) (int, error) {
	total := 0
	p := dynamodb.NewQueryPaginator(st.db, &dynamodb.QueryInput{
		TableName:                aws.String(st.table),
		IndexName:                aws.String(OwnerIndex),
		KeyConditionExpression:   aws.String("#owner = :owner"),
		FilterExpression:         aws.String("#status IN (:accepted, :running)"),
		ExpressionAttributeNames: map[string]string{"#owner": AttrOwner, "#status": "status"},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":owner": s(owner), ":accepted": s(string(export.StatusAccepted)), ":running": s(string(export.StatusInProgress)),
		},
		Select: types.SelectCount,
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("count live jobs of %s: %w", owner, err)
		}
		total += int(page.Count)
	}
	return total, nil
}
