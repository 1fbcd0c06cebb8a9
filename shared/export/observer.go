package export

import "context"

// JobEvent names what the Service did to a job, for an Observer.
type JobEvent string

// Events the Service reports.
const (
	EventAccepted  JobEvent = "accepted"
	EventCancelled JobEvent = "cancelled"
)

// Observer hears of the job events the Service handles itself (the steps'
// results are observed around the steps, by whoever calls them): the
// metrics adapter counts them. It must not block.
type Observer interface {
	JobEvent(ctx context.Context, job *Job, ev JobEvent)
}

// SetObserver installs an Observer of kick-offs and cancels.
func (s *Service) SetObserver(o Observer) { s.observer = o }

func (s *Service) observe(ctx context.Context, job *Job, ev JobEvent) {
	if s.observer != nil {
		s.observer.JobEvent(ctx, job, ev)
	}
}
