package ndjsonsource

import (
	"testing"
	"time"
)

// TestWindowByDate: the date-only shortcut of inWindow agrees with parsing
// every instant, for instants in every zone around both bounds.
func TestWindowByDate(t *testing.T) {
	since := time.Date(2025, 3, 10, 23, 0, 0, 0, time.UTC)
	until := time.Date(2025, 3, 20, 1, 0, 0, 0, time.UTC)
	bounds := []struct {
		name         string
		since, until *time.Time
	}{{"both", &since, &until}, {"since", &since, nil}, {"until", nil, &until}}
	zones := []*time.Location{time.FixedZone("-14", -14*3600), time.FixedZone("-5", -5*3600), time.UTC, time.FixedZone("+14", 14*3600)}
	for _, b := range bounds {
		r := &reader{}
		r.setWindow(b.since, b.until)
		n := 0
		for at := since.AddDate(0, 0, -3); at.Before(until.AddDate(0, 0, 3)); at = at.Add(37 * time.Minute) {
			for _, z := range zones {
				lu := at.In(z).Format("2006-01-02T15:04:05.000Z07:00")
				want := (b.since == nil || at.After(*b.since)) && (b.until == nil || !at.After(*b.until))
				if got := r.inWindow(lu); got != want {
					t.Fatalf("%s: inWindow(%s) = %v, want %v", b.name, lu, got, want)
				}
				n++
			}
		}
		if n < 1000 {
			t.Fatalf("only %d instants checked", n)
		}
	}
}
