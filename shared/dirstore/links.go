package dirstore

import "time"

// SetMaxLinkLifetime caps how long one link stays valid, as the signing
// session caps presigned S3 links on AWS: with a retention longer than d,
// links end before the job expires and a status poll after they ended
// returns fresh ones. 0 (the default) lets links live until the job
// expires.
func (s *Store) SetMaxLinkLifetime(d time.Duration) { s.maxLink = d }

// linkExpiry is when a link made now for a job expiring at expires ends.
func (s *Store) linkExpiry(expires time.Time) time.Time {
	if s.maxLink > 0 {
		if cap := s.now().Add(s.maxLink); cap.Before(expires) {
			return cap
		}
	}
	return expires
}
