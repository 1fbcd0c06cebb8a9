package s3store_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/bulkfhir/bulkfhir/shared/s3store"
)

const signerRole = "arn:aws:iam::123456789012:role/bulkfhir-download-signer"

// fakeSTS answers AssumeRole over the STS query protocol as strictly as
// STS does for a role with a 12 h MaxSessionDuration: SigV4-signed
// requests only, this role only, DurationSeconds in [900, 43200], and at
// most 3600 when the caller is itself a role session (role chaining: a
// Lambda function's credentials carry a session token). It keeps
// every session it issued so links can be checked against the session's
// expiry at any time of the shared fake clock.
type fakeSTS struct {
	srv *httptest.Server
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]time.Time // access key id → expiry
	assumed  int
}

func newFakeSTS(t *testing.T, now func() time.Time) *fakeSTS {
	f := &fakeSTS{now: now, sessions: map[string]time.Time{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeSTS) fail(w http.ResponseWriter, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusBadRequest)
	fmt.Fprintf(w, `<ErrorResponse><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>r</RequestId></ErrorResponse>`, code, msg)
}

func (f *fakeSTS) serve(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Authorization"), "/sts/aws4_request") {
		f.fail(w, "MissingAuthenticationToken", "Request is missing Authentication Token")
		return
	}
	if err := r.ParseForm(); err != nil || r.Form.Get("Action") != "AssumeRole" || r.Form.Get("Version") != "2011-06-15" {
		f.fail(w, "InvalidAction", "unsupported action")
		return
	}
	if r.Form.Get("RoleArn") != signerRole {
		f.fail(w, "AccessDenied", "not authorized to perform sts:AssumeRole")
		return
	}
	d, err := strconv.Atoi(r.Form.Get("DurationSeconds"))
	if err != nil || d < 900 || d > 43200 {
		f.fail(w, "ValidationError", "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
		return
	}
	if r.Header.Get("X-Amz-Security-Token") != "" && d > 3600 {
		f.fail(w, "ValidationError", "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
		return
	}
	f.mu.Lock()
	f.assumed++
	key := fmt.Sprintf("ASIAFAKE%08d", f.assumed)
	exp := f.now().Add(time.Duration(d) * time.Second).UTC().Truncate(time.Second)
	f.sessions[key] = exp
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials>`+
		`<AccessKeyId>%s</AccessKeyId><SecretAccessKey>secret-%s</SecretAccessKey><SessionToken>token-%s</SessionToken><Expiration>%s</Expiration>`+
		`</Credentials><AssumedRoleUser><Arn>%s/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser></AssumeRoleResult>`+
		`<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></AssumeRoleResponse>`, key, key, key, exp.Format(time.RFC3339), signerRole)
}

// link is what a presigned URL says of itself.
type link struct {
	key      string
	signedAt time.Time
	end      time.Time
}

// valid reports whether S3 would accept the link at t: before its
// X-Amz-Expires and before its session expires.
func (f *fakeSTS) valid(l link, t time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	exp, ok := f.sessions[l.key]
	return ok && t.Before(l.end) && t.Before(exp)
}

func (f *fakeSTS) expiry(key string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[key]
}

func parseLink(t *testing.T, raw string, signedAt time.Time) link {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil {
		t.Fatalf("link %s: X-Amz-Expires: %v", raw, err)
	}
	key, _, _ := strings.Cut(q.Get("X-Amz-Credential"), "/")
	if q.Get("X-Amz-Security-Token") != "token-"+key {
		t.Fatalf("link signed with %s carries the session token %q", key, q.Get("X-Amz-Security-Token"))
	}
	return link{key: key, signedAt: signedAt, end: signedAt.Add(time.Duration(secs) * time.Second)}
}

// TestLinksLiveAsLongAsTheySay: every link is signed by a download-signer
// session that outlives it, is as long as the retention allows (or a
// session), sessions are reused while enough is left, and a status poll
// after the links expired gets working ones.
func TestLinksLiveAsLongAsTheySay(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	min := time.Minute
	for _, tc := range []struct {
		name      string
		retention time.Duration
		session   time.Duration
		// chained: the caller is a role session (a Lambda function).
		chained bool
		// polls are the offsets from completion at which the manifest is
		// built, and wantLife the least lifetime each link must have.
		polls    []time.Duration
		wantLife []time.Duration
		assumed  int
	}{
		{"a function, retention within a session", 30 * min, s3store.ChainedMaxSession, true,
			[]time.Duration{0, 10 * min, 25 * min},
			[]time.Duration{30 * min, 20 * min, 5 * min}, 1},
		{"a function, retention longer than a session", 30 * time.Hour, s3store.ChainedMaxSession, true,
			[]time.Duration{0, 3 * min, 10 * min, time.Hour, 29*time.Hour + 30*min},
			[]time.Duration{55 * min, 55 * min, 55 * min, 55 * min, 30 * min}, 4},
		{"long-term credentials, 12 h sessions", 30 * time.Hour, 0, false,
			[]time.Duration{0, 30 * min, 90 * min, 12 * time.Hour, 29 * time.Hour},
			[]time.Duration{11 * time.Hour, 11 * time.Hour, 11 * time.Hour, 11 * time.Hour, time.Hour}, 4},
		{"long-term credentials, more asked than STS grants", 30 * time.Hour, 20 * time.Hour, false,
			[]time.Duration{0},
			[]time.Duration{11 * time.Hour}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			clock := func() time.Time { return now }
			fake := newFakeSTS(t, clock)
			token := ""
			if tc.chained {
				token = "session-of-the-function-role"
			}
			client := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(fake.srv.URL),
				Credentials: credentials.NewStaticCredentialsProvider("AKIDSTATUSFUNCTION", "secret", token)})
			signer := s3store.NewRoleSigner(client, signerRole, s3store.SignerOptions{MaxSession: tc.session, Now: clock})
			store := s3store.New(s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDSTATUSFUNCTION", "secret", "")}),
				s3store.Options{Bucket: "b", Prefix: "exports/"})
			store.SetSigner(signer)
			store.SetClock(clock)
			expires := t0.Add(tc.retention)
			var earlier []link
			for i, at := range tc.polls {
				now = t0.Add(at)
				for _, old := range earlier {
					if !now.Before(old.end) && fake.valid(old, now) {
						t.Fatalf("negative control: a link past its end is accepted at +%s", at)
					}
				}
				raw, err := store.URL(context.Background(), "job/Patient.0000.ndjson", expires)
				if err != nil {
					t.Fatalf("poll at +%s: %v", at, err)
				}
				l := parseLink(t, raw, now)
				if l.key == "AKIDSTATUSFUNCTION" {
					t.Fatal("link signed with the function's own credentials")
				}
				if exp := fake.expiry(l.key); l.end.After(exp) {
					t.Errorf("poll at +%s: link ends %s, after its session (%s)", at, l.end, exp)
				}
				if l.end.After(expires) {
					t.Errorf("poll at +%s: link ends %s, after the job expires (%s)", at, l.end, expires)
				}
				if got := l.end.Sub(now); got < tc.wantLife[i] {
					t.Errorf("poll at +%s: link valid for %s, want at least %s", at, got, tc.wantLife[i])
				}
				// Valid through its whole stated lifetime, not a second more.
				if !fake.valid(l, now) || !fake.valid(l, l.end.Add(-time.Second)) {
					t.Errorf("poll at +%s: link refused before its stated end %s", at, l.end)
				}
				if fake.valid(l, l.end.Add(time.Second)) {
					t.Errorf("poll at +%s: link accepted after its stated end", at)
				}
				earlier = append(earlier, l)
			}
			if fake.assumed != tc.assumed {
				t.Errorf("role assumed %d times, want %d", fake.assumed, tc.assumed)
			}
		})
	}
}

// TestFakeSTSIsStrict: the fake refuses what STS refuses (negative
// controls for the test above).
func TestFakeSTSIsStrict(t *testing.T) {
	fake := newFakeSTS(t, time.Now)
	creds := credentials.NewStaticCredentialsProvider("AKID", "secret", "")
	client := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(fake.srv.URL), Credentials: creds})
	chained := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(fake.srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("ASIA", "secret", "session-token")})
	if _, err := chained.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(signerRole),
		RoleSessionName: aws.String("s"), DurationSeconds: aws.Int32(3601)}); err == nil {
		t.Error("a role session assumed a role for more than an hour")
	}
	for _, tc := range []struct {
		role string
		secs int32
	}{{signerRole, 43201}, {signerRole, 899}, {"arn:aws:iam::123456789012:role/other", 900}} {
		if _, err := client.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(tc.role),
			RoleSessionName: aws.String("s"), DurationSeconds: aws.Int32(tc.secs)}); err == nil {
			t.Errorf("AssumeRole(%s, %ds) succeeded", tc.role, tc.secs)
		}
	}
	if _, err := client.AssumeRole(context.Background(), &sts.AssumeRoleInput{RoleArn: aws.String(signerRole),
		RoleSessionName: aws.String("s"), DurationSeconds: aws.Int32(43200)}); err != nil {
		t.Errorf("AssumeRole(12h): %v", err)
	}
}

// TestFunctionCannotAskTwelveHours: a caller that is a role session (a
// Lambda function) gets no 12 h session, as on AWS: the configuration
// must ask for ChainedMaxSession (lambdaenv does).
func TestFunctionCannotAskTwelveHours(t *testing.T) {
	fake := newFakeSTS(t, time.Now)
	client := sts.New(sts.Options{Region: "us-east-1", BaseEndpoint: aws.String(fake.srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("ASIA", "secret", "session-of-the-function-role")})
	store := s3store.New(s3.New(s3.Options{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("ASIA", "secret", "t")}),
		s3store.Options{Bucket: "b"})
	store.SetSigner(s3store.NewRoleSigner(client, signerRole, s3store.SignerOptions{MaxSession: 12 * time.Hour}))
	if _, err := store.URL(context.Background(), "job/Patient.0000.ndjson", time.Now().Add(2*time.Hour)); err == nil {
		t.Error("a role session got a 12 h session")
	}
	store.SetSigner(s3store.NewRoleSigner(client, signerRole, s3store.SignerOptions{MaxSession: s3store.ChainedMaxSession}))
	if _, err := store.URL(context.Background(), "job/Patient.0000.ndjson", time.Now().Add(2*time.Hour)); err != nil {
		t.Errorf("a 1 h session: %v", err)
	}
}
