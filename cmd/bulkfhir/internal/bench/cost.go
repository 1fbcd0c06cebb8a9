package bench

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/bulkdata"
	"github.com/bulkfhir/bulkfhir/shared/dynamostore"
	"github.com/bulkfhir/bulkfhir/shared/export"
	"github.com/bulkfhir/bulkfhir/shared/lambdaenv"
	"github.com/bulkfhir/bulkfhir/shared/lambdasource"
	"github.com/bulkfhir/bulkfhir/shared/sampledata"
)

// Public us-east-1 list prices (USD) the cost model uses.
const (
	priceLambdaGBs     = 0.0000133334 // arm64, per GB-second
	priceLambdaRequest = 0.20 / 1e6
	priceTransition    = 0.025 / 1000 // Step Functions Standard
	priceWRU           = 0.625 / 1e6  // DynamoDB on-demand write request unit
	priceRRU           = 0.125 / 1e6  // DynamoDB on-demand read request unit
	priceS3Put         = 0.005 / 1000 // PUT, COPY, POST, LIST
	priceS3Get         = 0.0004 / 1000
	priceAPIRequest    = 1.00 / 1e6 // API Gateway HTTP API
	priceS3GBMonth     = 0.023      // S3 Standard storage
	hoursPerMonth      = 730
	// Memory (MB) of the functions: the stack's defaults (infra/stack.go;
	// infra is its own module, so they are repeated here).
	lambdaMemoryExport   = 1024
	lambdaMemoryPlan     = 512
	lambdaMemoryAPI      = 512
	lambdaMemoryFinalize = 256
)

// Cost is the AWS path's bill for one export, from the requests counted in
// an emulator run, scaled to one million resources.
type Cost struct {
	Resources int64 `json:"measuredResources"`
	// Counts are the measured requests by service and operation.
	Counts map[string]float64 `json:"counts"`
	// Lines are the priced items for one million resources.
	Lines []CostLine `json:"perMillionResources"`
	Total float64    `json:"usdPerMillionResources"`
	// Machinery is the total without the client's file downloads and
	// storage: what the export itself costs.
	Machinery float64 `json:"usdPerMillionResourcesMachinery"`
}

// CostLine is one priced item.
type CostLine struct {
	Item     string  `json:"item"`
	Quantity float64 `json:"quantity"`
	Unit     string  `json:"unit"`
	USD      float64 `json:"usd"`
	Download bool    `json:"download,omitempty"`
}

func (c *Cost) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nCost model: the AWS adapters, wired as in the functions (S3 source and file store on MinIO, job store on DynamoDB Local), exported %d resources with every SDK request and DynamoDB's reported capacity counted; the counts are scaled to exactly one million resources and priced at us-east-1 list prices (arm64 Lambda at the stack's memory sizes, Lambda time as measured here).\n\n", c.Resources)
	b.WriteString("| item, per million resources | quantity | unit | USD |\n|---|---:|---|---:|\n")
	for _, l := range c.Lines {
		fmt.Fprintf(&b, "| %s | %.1f | %s | %.6f |\n", l.Item, l.Quantity, l.Unit, l.USD)
	}
	fmt.Fprintf(&b, "| **export machinery** | | | **%.6f** |\n| **with downloads and storage** | | | **%.6f** |\n", c.Machinery, c.Total)
	b.WriteString("\nTarget: ≤ $0.01 per million resources for the export machinery.\n")
	return b.String()
}

// counter counts requests by service and operation.
type counter struct {
	mu     sync.Mutex
	counts map[string]float64
	on     bool
}

func (c *counter) add(key string, n float64) {
	c.mu.Lock()
	if c.on {
		c.counts[key] += n
	}
	c.mu.Unlock()
}

func (c *counter) start() {
	c.mu.Lock()
	c.counts, c.on = map[string]float64{}, true
	c.mu.Unlock()
}

// s3Op names an S3 request from its method and query.
func s3Op(r *http.Request) string {
	q := r.URL.Query()
	switch r.Method {
	case http.MethodPut:
		if q.Has("partNumber") {
			return "UploadPart"
		}
		return "PutObject"
	case http.MethodPost:
		if q.Has("uploads") {
			return "CreateMultipartUpload"
		}
		if q.Has("uploadId") {
			return "CompleteMultipartUpload"
		}
		if q.Has("delete") {
			return "DeleteObjects"
		}
	case http.MethodGet:
		if q.Has("list-type") {
			return "ListObjectsV2"
		}
		return "GetObject"
	case http.MethodHead:
		return "HeadObject"
	case http.MethodDelete:
		if q.Has("uploadId") {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	}
	return r.Method
}

// countingTransport counts S3 requests on the way out.
type countingTransport struct {
	c      *counter
	s3Host string
	next   http.RoundTripper
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == t.s3Host {
		t.c.add("S3 "+s3Op(r), 1)
	}
	return t.next.RoundTrip(r)
}

// capacity asks DynamoDB for the consumed capacity of every request and
// counts it (read and write request units), with the requests.
func capacity(c *counter) func(*dynamodb.Options) {
	return func(o *dynamodb.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("benchCapacity",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					total := ddbtypes.ReturnConsumedCapacityTotal
					txItems := 0
					switch p := in.Parameters.(type) {
					case *dynamodb.GetItemInput:
						p.ReturnConsumedCapacity = total
					case *dynamodb.PutItemInput:
						p.ReturnConsumedCapacity = total
					case *dynamodb.UpdateItemInput:
						p.ReturnConsumedCapacity = total
					case *dynamodb.DeleteItemInput:
						p.ReturnConsumedCapacity = total
					case *dynamodb.QueryInput:
						p.ReturnConsumedCapacity = total
					case *dynamodb.TransactWriteItemsInput:
						p.ReturnConsumedCapacity = total
						txItems = len(p.TransactItems)
					}
					out, md, err := next.HandleInitialize(ctx, in)
					var cc *ddbtypes.ConsumedCapacity
					kind := "RRU"
					switch r := out.Result.(type) {
					case *dynamodb.GetItemOutput:
						cc = r.ConsumedCapacity
					case *dynamodb.QueryOutput:
						cc = r.ConsumedCapacity
					case *dynamodb.PutItemOutput:
						cc, kind = r.ConsumedCapacity, "WRU"
					case *dynamodb.UpdateItemOutput:
						cc, kind = r.ConsumedCapacity, "WRU"
					case *dynamodb.DeleteItemOutput:
						cc, kind = r.ConsumedCapacity, "WRU"
					case *dynamodb.TransactWriteItemsOutput:
						// Progress and file records: a check of the job
						// and a put, priced as transactional writes.
						kind = "WRU"
						var sum float64
						for _, c := range r.ConsumedCapacity {
							sum += aws.ToFloat64(c.CapacityUnits)
						}
						if sum == 0 {
							// Not reported: at least 2 WRU per item
							// (a transactional write of up to 1 KB).
							sum = float64(2 * txItems)
						}
						cc = &ddbtypes.ConsumedCapacity{CapacityUnits: &sum}
					}
					op := middleware.GetOperationName(ctx)
					c.add("DynamoDB "+op, 1)
					if cc != nil && cc.CapacityUnits != nil {
						c.add("DynamoDB "+kind, *cc.CapacityUnits)
					} else if kind == "WRU" {
						c.add("DynamoDB WRU", 1)
					} else {
						c.add("DynamoDB RRU", 1)
					}
					return out, md, err
				}), middleware.After)
		})
	}
}

// awsFigures runs the AWS adapters on the emulators: the S3 path's
// throughput and the cost model.
func awsFigures(ctx context.Context, o Options, data string, rep *Report) error {
	if !o.AWS {
		rep.Skipped = append(rep.Skipped, "S3 path and cost model (run with --aws; make bench does, after make tools)")
		return nil
	}
	minio, err := awstest.StartMinIO()
	if err != nil {
		return fmt.Errorf("MinIO: %w (run make tools)", err)
	}
	defer minio.Stop()
	ddb, err := awstest.StartDynamoDB()
	if err != nil {
		return fmt.Errorf("DynamoDB Local: %w (run make tools)", err)
	}
	defer ddb.Stop()
	os.Setenv("AWS_ENDPOINT_URL_S3", minio.Endpoint)
	os.Setenv("AWS_ENDPOINT_URL_DYNAMODB", ddb.Endpoint)
	awsCfg, err := awstest.Config(ctx)
	if err != nil {
		return err
	}
	cnt := &counter{counts: map[string]float64{}}
	u, _ := url.Parse(minio.Endpoint)
	awsCfg.HTTPClient = &http.Client{Transport: &countingTransport{c: cnt, s3Host: u.Host, next: http.DefaultTransport.(*http.Transport).Clone()}}

	s3t, _, err := awsExport(ctx, o, awsCfg, cnt, data, "same")
	if err != nil {
		return err
	}
	rep.Throughput = append(rep.Throughput, throughput("S3 path: S3 source → S3 file store (MinIO), jobs in DynamoDB Local",
		s3t.run.Resources, s3t.run.Bytes, s3t.run.Duration, fmt.Sprintf("%d units one at a time; emulators on the same machine", s3t.run.Units)))
	if base := rep.Throughput[0]; base.MBPerSec > 0 {
		last := &rep.Throughput[len(rep.Throughput)-1]
		last.Ratio = last.MBPerSec / base.MBPerSec
	}

	// The cost model exports about a million resources, so per-export
	// overheads weigh what they weigh at that size.
	perPatient := float64(rep.Resources) / float64(o.Patients)
	patients := int(math.Ceil(float64(o.CostResources) / perPatient))
	big := filepath.Join(o.Work, "cost-data")
	fmt.Fprintf(os.Stderr, "bench: cost model: generating %d patients (about %d resources)\n", patients, o.CostResources)
	if _, err := sampledata.Generate(big, sampledata.Options{Patients: patients, Seed: 2}); err != nil {
		return err
	}
	costRun, counts, err := awsExport(ctx, o, awsCfg, cnt, big, "cost")
	if err != nil {
		return err
	}
	os.RemoveAll(big)
	rep.Cost = priceRun(costRun.run, counts, costRun.files, costRun.apiTime)
	if rep.Compression, err = measureCompression(ctx, s3.NewFromConfig(awsCfg), costRun); err != nil {
		return fmt.Errorf("compression: %w", err)
	}
	applyCompression(rep.Cost, rep.Compression)
	return nil
}

type awsRun struct {
	run     *exportRun
	files   int
	apiTime time.Duration
	// bucket and outputs (the manifest's links) of the export.
	bucket  string
	outputs []string
}

// awsExport uploads data to a fresh source bucket on MinIO, exports it
// through the functions' own wiring (lambdaenv, lambdasource) with every request
// counted, and fetches the manifest as the status function would.
func awsExport(ctx context.Context, o Options, awsCfg aws.Config, cnt *counter, data, name string) (*awsRun, map[string]float64, error) {
	s3c := s3.NewFromConfig(awsCfg)
	src, dst, table := name+"-source", name+"-exports", name+"-jobs"
	for _, b := range []string{src, dst} {
		if _, err := s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(b)}); err != nil {
			return nil, nil, err
		}
	}
	names, _ := filepath.Glob(filepath.Join(data, "*.ndjson"))
	for _, n := range names {
		f, err := os.Open(n)
		if err != nil {
			return nil, nil, err
		}
		st, _ := f.Stat()
		_, err = s3c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(src), Key: aws.String(filepath.Base(n)), Body: f, ContentLength: aws.Int64(st.Size())})
		f.Close()
		if err != nil {
			return nil, nil, err
		}
	}
	if err := dynamostore.CreateTable(ctx, dynamodb.NewFromConfig(awsCfg), table); err != nil {
		return nil, nil, err
	}
	cfg := lambdaenv.Config{Table: table, Bucket: dst, BucketPrefix: "exports/", SourceBucket: src,
		Retention: 2 * time.Hour, MaxJobDuration: 24 * time.Hour, MaxFileBytes: export.DefaultMaxFileBytes, MaxLiveJobs: 20}
	fs3 := lambdaenv.S3(awsCfg)
	jobs, files := lambdaenv.Jobs(cfg, awsCfg, capacity(cnt)), lambdaenv.Files(cfg, fs3)
	source, err := lambdasource.New(cfg, awsCfg, fs3, o.Log)
	if err != nil {
		return nil, nil, err
	}
	cnt.start()
	run, err := runExport(ctx, jobs, files, source, cfg.Export(), bulkdata.LevelSystem, "", "")
	if err != nil {
		return nil, nil, err
	}
	svc := export.NewService(jobs, files, idleRunner{}, source, cfg.Export(), discard)
	t := time.Now()
	status, err := svc.Status(ctx, "bench", run.JobID)
	apiTime := time.Since(t)
	if err != nil || status.Manifest == nil {
		return nil, nil, fmt.Errorf("status after the export: %v", err)
	}
	cnt.mu.Lock()
	counts := cnt.counts
	cnt.on = false
	cnt.mu.Unlock()
	var outputs []string
	for _, f := range status.Manifest.Output {
		outputs = append(outputs, f.URL)
	}
	return &awsRun{run: run, files: len(status.Manifest.Output), apiTime: apiTime, bucket: dst, outputs: outputs}, counts, nil
}

// priceRun prices one measured export, scaled to a million resources.
func priceRun(run *exportRun, counts map[string]float64, files int, apiTime time.Duration) *Cost {
	scale := 1e6 / float64(run.Resources)
	c := &Cost{Resources: run.Resources, Counts: counts}
	add := func(item string, qty float64, unit string, price float64, download bool) {
		q := qty * scale
		c.Lines = append(c.Lines, CostLine{Item: item, Quantity: q, Unit: unit, USD: q * price, Download: download})
	}
	// Lambda: one invocation per step call, plus kick-off and status.
	inv := float64(run.StepCalls["plan"]+run.StepCalls["export"]+run.StepCalls["finalize"]) + 2
	add("Lambda invocations (plan, export chunks, finalize, kick-off, status)", inv, "requests", priceLambdaRequest, false)
	gbs := run.StepTimes["plan"].Seconds()*lambdaMemoryPlan/1024 +
		run.StepTimes["export"].Seconds()*lambdaMemoryExport/1024 +
		run.StepTimes["finalize"].Seconds()*lambdaMemoryFinalize/1024 +
		2*apiTime.Seconds()*lambdaMemoryAPI/1024
	add("Lambda compute (arm64, measured step time × memory)", gbs, "GB-s", priceLambdaGBs, false)
	// Step Functions: Plan, the Map, per chunk ExportChunk and the Choice,
	// per unit the Succeed, and Finalize.
	transitions := float64(3 + 2*run.Chunks + run.Units)
	add("Step Functions state transitions", transitions, "transitions", priceTransition, false)
	add("API Gateway requests (kick-off, status)", 2, "requests", priceAPIRequest, false)
	var puts, gets []string
	for k := range counts {
		if strings.HasPrefix(k, "S3 ") {
			switch strings.TrimPrefix(k, "S3 ") {
			case "GetObject", "HeadObject":
				gets = append(gets, k)
			case "DeleteObject", "DeleteObjects", "AbortMultipartUpload":
			default:
				puts = append(puts, k)
			}
		}
	}
	sort.Strings(puts)
	sort.Strings(gets)
	for _, k := range puts {
		add(k+" requests", counts[k], "requests", priceS3Put, false)
	}
	for _, k := range gets {
		add(k+" requests (reading the source)", counts[k], "requests", priceS3Get, false)
	}
	add("DynamoDB write request units", counts["DynamoDB WRU"], "WRU", priceWRU, false)
	add("DynamoDB read request units", counts["DynamoDB RRU"], "RRU", priceRRU, false)
	add("S3 GET of the output files (the client's downloads)", float64(files), "requests", priceS3Get, true)
	gbMonths := float64(run.Bytes) / 1e9 * 2 / hoursPerMonth
	add("S3 storage of the output for the 2 h retention", gbMonths, "GB-months", priceS3GBMonth, true)
	for _, l := range c.Lines {
		c.Total += l.USD
		if !l.Download {
			c.Machinery += l.USD
		}
	}
	c.Total = math.Round(c.Total*1e6) / 1e6
	c.Machinery = math.Round(c.Machinery*1e6) / 1e6
	return c
}
