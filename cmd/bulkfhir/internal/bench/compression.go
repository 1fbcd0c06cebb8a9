package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// priceTransferOut is S3 data transfer out to the internet, us-east-1,
// the first 10 TB a month (USD per GB).
const priceTransferOut = 0.09

// Compression compares the cost model's export before compression
// (NDJSON stored and sent as written) and after (stored gzip-compressed,
// sent as stored): bytes stored, and bytes a client downloading every
// output file through its presigned link received, measured on the wire.
type Compression struct {
	// Per million resources.
	PlainBytes       float64 `json:"plainBytesPerMillion"`
	StoredBytes      float64 `json:"storedBytesPerMillion"`
	TransferredBytes float64 `json:"transferredBytesPerMillion"`
	Ratio            float64 `json:"ratio"`
	// USD per million resources, before and after.
	TransferUSDBefore float64 `json:"transferUsdBefore"`
	TransferUSDAfter  float64 `json:"transferUsdAfter"`
	StorageUSDBefore  float64 `json:"storageUsdBefore"`
	StorageUSDAfter   float64 `json:"storageUsdAfter"`
}

// wireCounter counts the bytes a response body delivers.
type wireCounter struct {
	io.ReadCloser
	n *int64
}

func (w wireCounter) Read(p []byte) (int, error) {
	n, err := w.ReadCloser.Read(p)
	*w.n += int64(n)
	return n, err
}

// measureCompression sums the stored size of the run's output objects and
// downloads every output file as SMART's bulk-data-client does
// (Accept-Encoding: gzip, decoding itself), counting the bytes received.
func measureCompression(ctx context.Context, s3c *s3.Client, r *awsRun) (*Compression, error) {
	var stored int64
	p := s3.NewListObjectsV2Paginator(s3c, &s3.ListObjectsV2Input{Bucket: aws.String(r.bucket), Prefix: aws.String("exports/" + r.run.JobID + "/")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, o := range page.Contents {
			if strings.HasSuffix(aws.ToString(o.Key), ".ndjson") {
				stored += aws.ToInt64(o.Size)
			}
		}
	}
	var wire, plain int64
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, f := range r.outputs {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, f, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept-Encoding", "gzip, deflate, br, identity")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		n, err := io.Copy(io.Discard, wireCounter{resp.Body, &wire})
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || n == 0 {
			return nil, fmt.Errorf("download %s: %d %v", resp.Request.URL.Path, resp.StatusCode, err)
		}
	}
	plain = r.run.Bytes
	scale := 1e6 / float64(r.run.Resources)
	gbMonths := func(b int64) float64 { return float64(b) / 1e9 * 2 / hoursPerMonth }
	c := &Compression{
		PlainBytes: float64(plain) * scale, StoredBytes: float64(stored) * scale, TransferredBytes: float64(wire) * scale,
		TransferUSDBefore: float64(plain) / 1e9 * priceTransferOut * scale, TransferUSDAfter: float64(wire) / 1e9 * priceTransferOut * scale,
		StorageUSDBefore: gbMonths(plain) * priceS3GBMonth * scale, StorageUSDAfter: gbMonths(stored) * priceS3GBMonth * scale,
	}
	if stored > 0 {
		c.Ratio = float64(plain) / float64(stored)
	}
	return c, nil
}

// applyCompression prices the cost model's storage at the stored
// (compressed) size and adds the data transfer of the downloads.
func applyCompression(cost *Cost, c *Compression) {
	for i, l := range cost.Lines {
		if strings.HasPrefix(l.Item, "S3 storage of the output") {
			cost.Lines[i].Item += " (gzip-compressed)"
			cost.Lines[i].Quantity *= c.StoredBytes / c.PlainBytes
			cost.Lines[i].USD *= c.StoredBytes / c.PlainBytes
		}
	}
	cost.Lines = append(cost.Lines, CostLine{Item: "Data transfer out of the downloads (gzip-compressed)", Quantity: c.TransferredBytes / 1e9,
		Unit: "GB", USD: c.TransferUSDAfter, Download: true})
	cost.Total = 0
	for _, l := range cost.Lines {
		cost.Total += l.USD
	}
	cost.Total = math.Round(cost.Total*1e6) / 1e6
}

func (c *Compression) markdown() string {
	var b strings.Builder
	b.WriteString("\nCompression (the cost model's export; transfer measured on the wire downloading every file as SMART's bulk-data-client does):\n\n")
	b.WriteString("| per million resources | before (plain NDJSON) | after (gzip) |\n|---|---:|---:|\n")
	fmt.Fprintf(&b, "| bytes stored | %.1f MB | %.1f MB |\n", c.PlainBytes/1e6, c.StoredBytes/1e6)
	fmt.Fprintf(&b, "| bytes transferred | %.1f MB | %.1f MB |\n", c.PlainBytes/1e6, c.TransferredBytes/1e6)
	fmt.Fprintf(&b, "| data transfer out, USD | %.6f | %.6f |\n", c.TransferUSDBefore, c.TransferUSDAfter)
	fmt.Fprintf(&b, "| storage for the 2 h retention, USD | %.6f | %.6f |\n", c.StorageUSDBefore, c.StorageUSDAfter)
	fmt.Fprintf(&b, "\nRatio %.1f:1; transfer saved: $%.4f per million resources.\n", c.Ratio, c.TransferUSDBefore-c.TransferUSDAfter)
	return b.String()
}
