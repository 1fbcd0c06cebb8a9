package s3store_test

import (
	"context"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/bulkfhir/bulkfhir/shared/awstest"
	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

// recordingProvider remembers the sessions the signer was given.
type recordingProvider struct {
	aws.CredentialsProvider
	mu       sync.Mutex
	sessions map[string]time.Time
}

func (p *recordingProvider) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := p.CredentialsProvider.Retrieve(ctx)
	if err == nil {
		p.mu.Lock()
		p.sessions[c.AccessKeyID] = c.Expires
		p.mu.Unlock()
	}
	return c, err
}

// TestSignerSessionsOnMinIO signs links with sessions MinIO's STS issues
// (AssumeRole, as the status function assumes the download-signer role):
// MinIO checks the signature and the session on every GET.
func TestSignerSessionsOnMinIO(t *testing.T) {
	store, _ := newStore(t, "signer")
	ctx := context.Background()
	cfg, err := awstest.Config(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stsClient := sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(os.Getenv("AWS_ENDPOINT_URL_S3")) })
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	rec := &recordingProvider{sessions: map[string]time.Time{},
		CredentialsProvider: stscreds.NewAssumeRoleProvider(stsClient, "arn:aws:iam::123456789012:role/bulkfhir-download-signer",
			func(o *stscreds.AssumeRoleOptions) { o.Duration = 15 * time.Minute })}
	// The shortest session STS grants, so a 2 h retention outlives it.
	store.SetSigner(s3store.NewSigner(rec, s3store.SignerOptions{MaxSession: 15 * time.Minute, Now: clock}))
	store.SetClock(clock)
	key := "job9/Patient.0000.ndjson"
	w, _ := store.Create(ctx, key)
	w.Write([]byte(`{"resourceType":"Patient","id":"p1"}` + "\n"))
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	expires := now.Add(2 * time.Hour)
	check := func(raw string, minLife time.Duration) string {
		t.Helper()
		u, _ := url.Parse(raw)
		q := u.Query()
		akid, _, _ := strings.Cut(q.Get("X-Amz-Credential"), "/")
		exp, ok := rec.sessions[akid]
		if !ok || akid == awstest.AccessKey || q.Get("X-Amz-Security-Token") == "" {
			t.Fatalf("link signed by %s, not by a download-signer session", akid)
		}
		signed, _ := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
		secs, _ := strconv.Atoi(q.Get("X-Amz-Expires"))
		if end := signed.Add(time.Duration(secs) * time.Second); end.After(exp) || end.After(expires) {
			t.Errorf("link ends %s: after its session (%s) or the job (%s)", end, exp, expires)
		}
		if secs < int(minLife.Seconds()) {
			t.Errorf("link valid for %ds of a 15 min session", secs)
		}
		if code, body, _ := get(t, raw); code != 200 || !strings.Contains(string(body), `"p1"`) {
			t.Fatalf("GET = %d %s", code, body)
		}
		// Negative control: without its session token MinIO refuses it.
		q.Del("X-Amz-Security-Token")
		u.RawQuery = q.Encode()
		if code, _, _ := get(t, u.String()); code != 403 {
			t.Errorf("link without its session token = %d, want 403", code)
		}
		return akid
	}
	first, err := store.URL(ctx, key, expires)
	if err != nil {
		t.Fatal(err)
	}
	a := check(first, 13*time.Minute)
	again, _ := store.URL(ctx, key, expires)
	if b := check(again, 13*time.Minute); b != a {
		t.Errorf("a fresh session was assumed (%s) while %s had enough left", b, a)
	}
	// Later polls, when too little of the session is left for a full
	// link, get one signed by a new session.
	mu.Lock()
	now = now.Add(3 * time.Minute)
	mu.Unlock()
	later, err := store.URL(ctx, key, expires)
	if err != nil {
		t.Fatal(err)
	}
	if b := check(later, 10*time.Minute); b == a {
		t.Errorf("still signing with %s when less than a link's worth of it is left", a)
	}
}
