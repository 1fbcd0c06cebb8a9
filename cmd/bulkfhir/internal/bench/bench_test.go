package bench

import (
	"math"
	"net/http/httptest"
	"testing"
	"time"
)

func TestS3Op(t *testing.T) {
	cases := []struct{ method, target, want string }{
		{"PUT", "/b/k?partNumber=2&uploadId=x", "UploadPart"},
		{"PUT", "/b/k", "PutObject"},
		{"POST", "/b/k?uploads", "CreateMultipartUpload"},
		{"POST", "/b/k?uploadId=x", "CompleteMultipartUpload"},
		{"GET", "/b?list-type=2&prefix=p", "ListObjectsV2"},
		{"GET", "/b/k", "GetObject"},
		{"DELETE", "/b/k?uploadId=x", "AbortMultipartUpload"},
	}
	for _, c := range cases {
		if got := s3Op(httptest.NewRequest(c.method, c.target, nil)); got != c.want {
			t.Errorf("%s %s = %s, want %s", c.method, c.target, got, c.want)
		}
	}
}

func TestDistPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := dist("x", 5, ds)
	if l.P50ms != 51 || l.P99ms != 100 || l.MaxMs != 100 || l.Requests != 100 {
		t.Fatalf("%+v", l)
	}
}

// TestPriceRun checks the model's arithmetic on a known run: every line is
// scaled to a million resources and priced.
func TestPriceRun(t *testing.T) {
	run := &exportRun{Resources: 500_000, Bytes: 1e9, Units: 10, Chunks: 12,
		StepTimes: map[string]time.Duration{"plan": time.Second, "export": 100 * time.Second, "finalize": time.Second},
		StepCalls: map[string]int{"plan": 1, "export": 12, "finalize": 1}}
	counts := map[string]float64{"S3 UploadPart": 100, "S3 GetObject": 50, "DynamoDB WRU": 40, "DynamoDB RRU": 20}
	c := priceRun(run, counts, 16, 0)
	want := map[string]float64{
		"Step Functions state transitions":                                     2 * (3 + 2*12 + 10),
		"Lambda invocations (plan, export chunks, finalize, kick-off, status)": 2 * 16,
		"S3 UploadPart requests":                                               200,
		"DynamoDB write request units":                                         80,
		"S3 GET of the output files (the client's downloads)":                  32,
	}
	seen := 0
	for _, l := range c.Lines {
		if q, ok := want[l.Item]; ok {
			seen++
			if math.Abs(l.Quantity-q) > 1e-9 {
				t.Errorf("%s = %v, want %v", l.Item, l.Quantity, q)
			}
		}
		if l.USD < 0 {
			t.Errorf("%s costs %v", l.Item, l.USD)
		}
	}
	if seen != len(want) {
		t.Fatalf("found %d of %d lines: %+v", seen, len(want), c.Lines)
	}
	// Lambda compute: (1 s × 0.5 GB + 100 s × 1 GB + 1 s × 0.25 GB) × 2.
	for _, l := range c.Lines {
		if l.Unit == "GB-s" && math.Abs(l.Quantity-201.5) > 1e-9 {
			t.Errorf("GB-s = %v, want 201.5", l.Quantity)
		}
	}
	if c.Machinery <= 0 || c.Total < c.Machinery {
		t.Fatalf("machinery %v, total %v", c.Machinery, c.Total)
	}
}
