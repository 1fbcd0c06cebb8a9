package s3store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
)

// A presigned URL stops working when the credentials that signed it
// expire, whatever its X-Amz-Expires says. A Lambda function's own
// credentials last minutes to hours and say nothing of their expiry, so
// links are signed with a session of a dedicated download-signer role
// instead: its expiry is known, and no link outlives it.

// DefaultMaxSession is the longest session an IAM role allows
// (MaxSessionDuration at most 12 h); STS refuses longer ones.
const DefaultMaxSession = 12 * time.Hour

// ChainedMaxSession is the longest session STS grants a caller that is
// itself a role session (role chaining), whatever the role's
// MaxSessionDuration: a Lambda function assuming the download signer.
const ChainedMaxSession = time.Hour

// minSession is the shortest session STS grants (DurationSeconds ≥ 900).
const minSession = 15 * time.Minute

// Signer hands out the credentials links are signed with: a cached
// session of the download-signer role, replaced when too little of it is
// left for the link asked for.
type Signer struct {
	provider   aws.CredentialsProvider
	maxSession time.Duration
	reuse      time.Duration
	now        func() time.Time

	mu  sync.Mutex
	cur aws.Credentials
}

// SignerOptions tune a Signer.
type SignerOptions struct {
	// MaxSession is the session duration asked for: at most the role's
	// MaxSessionDuration, and ChainedMaxSession when the caller is a role
	// session itself (default 12 h, at most 12 h, at least 15 min).
	MaxSession time.Duration
	// Reuse is how much of a full session may be used up before links as
	// long as a session are signed with a fresh one (default MaxSession/12:
	// with the 1 h sessions of a Lambda function, links are at least 54
	// minutes long, and a container assumes the role at most every 5
	// minutes for them).
	Reuse time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// NewRoleSigner assumes roleARN through client for each session.
func NewRoleSigner(client stscreds.AssumeRoleAPIClient, roleARN string, opts SignerOptions) *Signer {
	opts = opts.withDefaults()
	p := stscreds.NewAssumeRoleProvider(client, roleARN, func(o *stscreds.AssumeRoleOptions) {
		o.Duration = opts.MaxSession
		o.RoleSessionName = "bulkfhir-download-links"
	})
	return NewSigner(p, opts)
}

// NewSigner signs with the sessions provider returns (each Retrieve a new
// one whose Expires is set).
func NewSigner(provider aws.CredentialsProvider, opts SignerOptions) *Signer {
	opts = opts.withDefaults()
	return &Signer{provider: provider, maxSession: opts.MaxSession, reuse: opts.Reuse, now: opts.Now}
}

func (o SignerOptions) withDefaults() SignerOptions {
	if o.MaxSession <= 0 || o.MaxSession > DefaultMaxSession {
		o.MaxSession = DefaultMaxSession
	}
	if o.MaxSession < minSession {
		o.MaxSession = minSession
	}
	if o.Reuse <= 0 || o.Reuse >= o.MaxSession {
		o.Reuse = o.MaxSession / 12
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// linkSkew is kept between a link's end and its session's end.
const linkSkew = time.Minute

// Credentials returns a session to sign a link wanted for `want`, and how
// long the link may be valid: `want`, or less when no session can last
// that long. A cached session serves while at least
// min(want, MaxSession-Reuse) of it is left.
func (s *Signer) Credentials(ctx context.Context, want time.Duration) (aws.Credentials, time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	enough := min(want, s.maxSession-s.reuse)
	left := func() time.Duration { return s.cur.Expires.Sub(s.now()) - linkSkew }
	if !s.cur.HasKeys() || left() < enough {
		c, err := s.provider.Retrieve(ctx)
		if err != nil {
			return aws.Credentials{}, 0, fmt.Errorf("download signer: new session: %w", err)
		}
		if !c.CanExpire || c.Expires.IsZero() {
			return aws.Credentials{}, 0, fmt.Errorf("download signer: the session has no expiry")
		}
		s.cur = c
	}
	d := min(want, left())
	if d < time.Second {
		return aws.Credentials{}, 0, fmt.Errorf("download signer: the new session expires at %s, too soon to sign a link", s.cur.Expires.UTC().Format(time.RFC3339))
	}
	return s.cur, d, nil
}
