package export

import "unicode"

// MaxJobIDLen and MaxOwnerLen bound what reaches a store: a DynamoDB key
// is at most 2,048 bytes and a bbolt key 32 KiB, and no real id comes near.
const (
	MaxJobIDLen = 64
	MaxOwnerLen = 256
)

// ValidJobID reports whether id can be a job id: 1-64 of A-Z, a-z, 0-9, '-'
// and '_' (the ids this server makes are 32 hex digits). Anything else is
// answered as an unknown job before it reaches a store.
func ValidJobID(id string) bool {
	if id == "" || len(id) > MaxJobIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// ValidOwner reports whether owner (a client id from a token or a JWT
// claim) can be stored: 1-256 bytes of printable UTF-8. Control characters
// are refused: the embedded store's live-job index separates owner and job
// id with NUL.
func ValidOwner(owner string) bool {
	if owner == "" || len(owner) > MaxOwnerLen {
		return false
	}
	for _, r := range owner {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
