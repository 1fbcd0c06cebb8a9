package export

import (
	"context"
	"errors"
)

// CappedCreator is a JobStore that checks the per-owner cap on live jobs
// and creates the job in one atomic step, so concurrent kick-offs of one
// client can never pass the cap together. Every store of this repository
// implements it; the Service falls back to CountLive then Create (which can
// overshoot under concurrency) for a store that does not.
type CappedCreator interface {
	// CreateCapped stores a new job unless its owner already has maxLive
	// accepted or in-progress jobs (ErrTooManyLive); ErrJobExists if the
	// ID is taken. A job that leaves the live states frees its place at
	// once.
	CreateCapped(ctx context.Context, job *Job, maxLive int) error
}

// ErrTooManyLive is CreateCapped's answer when the owner is at the cap.
var ErrTooManyLive = errors.New("export: the owner has too many live jobs")
