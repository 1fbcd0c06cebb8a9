package exporttest

import (
	"context"
	"sort"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/export"
)

var _ export.Queue = (*JobStore)(nil)

// Enqueue implements export.Queue.
func (s *JobStore) Enqueue(_ context.Context, j *export.Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued == nil {
		s.queued, s.admitted = map[string]string{}, map[string]bool{}
	}
	s.queued[export.QueueKey(j)] = j.ID
	return nil
}

// Remove implements export.Queue.
func (s *JobStore) Remove(_ context.Context, j *export.Job) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.queued, export.QueueKey(j))
	return nil
}

func (s *JobStore) queueKeys() []string {
	keys := make([]string, 0, len(s.queued))
	for k := range s.queued {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Ahead implements export.Queue.
func (s *JobStore) Ahead(_ context.Context, j *export.Job) (int, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mine := export.QueueKey(j)
	if _, ok := s.queued[mine]; !ok {
		return 0, false, nil
	}
	n := 0
	for k := range s.queued {
		if k < mine {
			n++
		}
	}
	return n, true, nil
}

// AdmitNext implements export.Queue.
func (s *JobStore) AdmitNext(_ context.Context, maxRunning int) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	running := 0
	for id := range s.admitted {
		if j, ok := s.jobs[id]; ok && j.Status.Live() {
			running++
		} else {
			delete(s.admitted, id)
		}
	}
	for _, k := range s.queueKeys() {
		if running >= maxRunning {
			return "", nil
		}
		id := s.queued[k]
		delete(s.queued, k)
		if j, ok := s.jobs[id]; !ok || j.Status != export.StatusAccepted {
			continue
		}
		s.admitted[id] = true
		return id, nil
	}
	return "", nil
}

// Admitted implements export.Queue.
func (s *JobStore) Admitted(_ context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for id := range s.admitted {
		if j, ok := s.jobs[id]; ok && j.Status.Live() {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Waiting implements export.Queue.
func (s *JobStore) Waiting(_ context.Context) (int, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.queueKeys()
	if len(keys) == 0 {
		return 0, time.Time{}, nil
	}
	return len(keys), s.jobs[s.queued[keys[0]]].CreatedAt, nil
}
