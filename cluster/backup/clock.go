package backup

import "time"

// Clock is the time source of backups, drills and the scheduler, so tests
// can drive them without sleeping.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns the current time.
func (SystemClock) Now() time.Time { return time.Now() }

// After waits on a real timer.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
