// Package dynamostore is the JobStore on DynamoDB: one table, where a job is
// the item (pk "JOB#<id>", sk "JOB"), each unit's progress an item
// (sk "UNIT#<unit>") and each file it wrote an item (sk "FILE#<key>") in
// the same partition, so the job item keeps a fixed, small size and no
// single item takes every write of a large job. Status changes are
// UpdateItem calls with a ConditionExpression on the status; unit and file
// items are written in a transaction with a ConditionCheck on the job's
// status, so nothing is recorded for a job that is no longer live. Reads of
// units and files are paginated queries. Every item carries the TTL
// attribute expiresAt (epoch seconds). The GSI "byOwner" counts a client's
// live jobs.
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
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
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
	unitPrefix   = "UNIT#"
	jobKeyPrefix = "JOB#"
)

// Store is an export.JobStore on a DynamoDB table.
type Store struct {
	db    API
	table string
	// fileTTL is how long file records live (past any job's life: the job
	// item's own TTL decides when the job is gone).
	fileTTL time.Duration
	// pageSize limits the items one query page returns (0: DynamoDB's
	// 1 MB pages); tests set it small to exercise paging.
	pageSize int32
	now      func() time.Time
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

// SetPageSize limits the items per query page (tests).
func (st *Store) SetPageSize(n int32) { st.pageSize = n }

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
	if j.Upstream != "" {
		it["upstream"] = s(j.Upstream)
	}
	it["createdAt"] = s(ts(j.CreatedAt))
	it["updatedAt"] = s(ts(j.UpdatedAt))
	it["expires"] = s(ts(j.ExpiresAt))
	it[AttrTTL] = n(j.ExpiresAt.Unix())
	if j.Plan != nil {
		it["plan"] = s(mustJSON(j.Plan))
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
		RequestURL: str(it, "requestUrl"), Upstream: str(it, "upstream"),
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
	if p := str(it, "plan"); p != "" {
		j.Plan = &export.PlanRef{}
		if err := json.Unmarshal([]byte(p), j.Plan); err != nil {
			return nil, fmt.Errorf("decode job %s: plan: %w", j.ID, err)
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
	if t.Plan != nil {
		set = append(set, "#plan = :plan")
		names["#plan"] = "plan"
		values[":plan"] = s(mustJSON(t.Plan))
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

// SaveProgress implements export.JobStore: the unit's own item, written
// only while the job is in progress.
func (st *Store) SaveProgress(ctx context.Context, id, unitID string, p export.UnitProgress) error {
	item := map[string]types.AttributeValue{
		AttrPK: s(jobKeyPrefix + id), AttrSK: s(unitPrefix + unitID), "unit": s(unitID),
		"progress": s(mustJSON(p)), AttrTTL: n(st.now().Add(st.fileTTL).Unix()),
	}
	if err := st.putFenced(ctx, id, item, export.StatusInProgress); err != nil {
		return fmt.Errorf("save progress of %s/%s: %w", id, unitID, err)
	}
	return nil
}

// putFenced puts item in one transaction with a check that the job exists
// and is in one of the statuses; a failed check is a *ConflictError (or
// ErrJobNotFound).
func (st *Store) putFenced(ctx context.Context, id string, item map[string]types.AttributeValue, statuses ...export.Status) error {
	values := map[string]types.AttributeValue{}
	var in []string
	for i, status := range statuses {
		k := fmt.Sprintf(":s%d", i)
		values[k] = s(string(status))
		in = append(in, k)
	}
	_, err := st.db.TransactWriteItems(ctx, &dynamodb.TransactWriteItemsInput{TransactItems: []types.TransactWriteItem{
		{ConditionCheck: &types.ConditionCheck{
			TableName: aws.String(st.table), Key: jobKey(id),
			ConditionExpression:       aws.String("attribute_exists(" + AttrPK + ") AND #status IN (" + strings.Join(in, ", ") + ")"),
			ExpressionAttributeNames:  map[string]string{"#status": "status"},
			ExpressionAttributeValues: values,
		}},
		{Put: &types.Put{TableName: aws.String(st.table), Item: item}},
	}})
	var tc *types.TransactionCanceledException
	if errors.As(err, &tc) && len(tc.CancellationReasons) > 0 && aws.ToString(tc.CancellationReasons[0].Code) == "ConditionalCheckFailed" {
		return st.conflict(ctx, id)
	}
	return err
}

// query pages through the items of a job's partition whose sort key
// starts with prefix.
func (st *Store) query(ctx context.Context, id, prefix string, fn func(map[string]types.AttributeValue) error) error {
	in := &dynamodb.QueryInput{
		TableName:              aws.String(st.table),
		KeyConditionExpression: aws.String("pk = :pk AND begins_with(sk, :prefix)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": s(jobKeyPrefix + id), ":prefix": s(prefix),
		},
		ConsistentRead: aws.Bool(true),
	}
	if st.pageSize > 0 {
		in.Limit = aws.Int32(st.pageSize)
	}
	p := dynamodb.NewQueryPaginator(st.db, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, it := range page.Items {
			if err := fn(it); err != nil {
				return err
			}
		}
	}
	return nil
}

// Progress implements export.JobStore with a paginated query.
func (st *Store) Progress(ctx context.Context, id string) (map[string]export.UnitProgress, error) {
	out := map[string]export.UnitProgress{}
	err := st.query(ctx, id, unitPrefix, func(it map[string]types.AttributeValue) error {
		var p export.UnitProgress
		if err := json.Unmarshal([]byte(str(it, "progress")), &p); err != nil {
			return fmt.Errorf("decode progress: %w", err)
		}
		out[str(it, "unit")] = p
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read progress of %s: %w", id, err)
	}
	return out, nil
}

// PutFile implements export.JobStore: the file's own item, written only
// while the job is live.
func (st *Store) PutFile(ctx context.Context, id string, f export.File) error {
	item := map[string]types.AttributeValue{
		AttrPK: s(jobKeyPrefix + id), AttrSK: s(filePrefix + f.Key),
		"file": s(mustJSON(f)), AttrTTL: n(st.now().Add(st.fileTTL).Unix()),
	}
	if err := st.putFenced(ctx, id, item, export.StatusAccepted, export.StatusInProgress); err != nil {
		return fmt.Errorf("record file %s: %w", f.Key, err)
	}
	return nil
}

// Files implements export.JobStore with a paginated query.
func (st *Store) Files(ctx context.Context, id string) ([]export.File, error) {
	var out []export.File
	err := st.query(ctx, id, filePrefix, func(it map[string]types.AttributeValue) error {
		var f export.File
		if err := json.Unmarshal([]byte(str(it, "file")), &f); err != nil {
			return fmt.Errorf("decode file: %w", err)
		}
		out = append(out, f)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list files of %s: %w", id, err)
	}
	return out, nil
}

// FilesAfter implements export.FilePager: one query from the sort key
// after FILE#after, read only as far as limit items (a manifest page maps
// onto a query page).
func (st *Store) FilesAfter(ctx context.Context, id, after string, limit int) ([]export.File, error) {
	in := &dynamodb.QueryInput{
		TableName:              aws.String(st.table),
		KeyConditionExpression: aws.String("pk = :pk AND sk > :after"),
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": s(jobKeyPrefix + id), ":after": s(filePrefix + after),
		},
		ConsistentRead: aws.Bool(true),
		Limit:          aws.Int32(int32(limit)),
	}
	if st.pageSize > 0 && st.pageSize < int32(limit) {
		in.Limit = aws.Int32(st.pageSize)
	}
	var out []export.File
	p := dynamodb.NewQueryPaginator(st.db, in)
	for p.HasMorePages() && len(out) < limit {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list files of %s: %w", id, err)
		}
		for _, it := range page.Items {
			if !strings.HasPrefix(str(it, AttrSK), filePrefix) {
				return out, nil // past the file items
			}
			var f export.File
			if err := json.Unmarshal([]byte(str(it, "file")), &f); err != nil {
				return nil, fmt.Errorf("decode file: %w", err)
			}
			out = append(out, f)
			if len(out) == limit {
				return out, nil
			}
		}
	}
	return out, nil
}

var _ export.FilePager = (*Store)(nil)

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

// MaxItemBytes is DynamoDB's item size limit (400 KB).
const MaxItemBytes = 400 * 1024

// ItemSize is an item's size as DynamoDB counts it against MaxItemBytes:
// the UTF-8 bytes of each attribute name plus its value (numbers about one
// byte per two digits, nested maps and lists 3 bytes plus their elements,
// each element 1 more).
func ItemSize(it map[string]types.AttributeValue) int {
	size := 0
	for k, v := range it {
		size += len(k) + valueSize(v)
	}
	return size
}

func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return (len(strings.TrimLeft(v.Value, "-0"))+1)/2 + 1
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		n := 0
		for _, s := range v.Value {
			n += len(s)
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += len(k) + valueSize(e) + 1
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += valueSize(e) + 1
		}
		return n
	}
	return 0
}
