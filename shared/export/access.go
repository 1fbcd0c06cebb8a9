package export

import "context"

// CheckOwner returns nil when owner may see job id (its own, not cancelled,
// not expired), else ErrJobNotFound: the check a download makes.
func (s *Service) CheckOwner(ctx context.Context, owner, id string) error {
	_, err := s.visibleJob(ctx, owner, id)
	return err
}
