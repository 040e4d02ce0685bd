package grpcserver

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a set of token buckets, one per peer key, with bounded memory.
//
// A bucket that is full is indistinguishable from a new one, so dropping it
// loses nothing; sweeps drop full buckets. When the table holds maxPeers
// buckets and none is full, new peers share the overflow bucket, so a
// caller with many addresses gains at most one extra bucket.
type limiter struct {
	limit    rate.Limit
	burst    int
	maxPeers int

	mu        sync.Mutex // guards the fields below
	peers     map[string]*rate.Limiter
	overflow  *rate.Limiter
	lastSweep time.Time
}

// sweepEvery bounds how often a sweep runs: a sweep is linear in the table.
const sweepEvery = time.Second

func newLimiter(perSecond float64, burst, maxPeers int) *limiter {
	return &limiter{
		limit:    rate.Limit(perSecond),
		burst:    burst,
		maxPeers: maxPeers,
		peers:    make(map[string]*rate.Limiter),
		overflow: rate.NewLimiter(rate.Limit(perSecond), burst),
	}
}

// allow takes n tokens (at most the burst) from key's bucket at time now,
// and reports whether they were there.
func (l *limiter) allow(key string, n int, now time.Time) bool {
	n = min(n, l.burst)
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= time.Minute {
		l.sweep(now)
	}
	b, ok := l.peers[key]
	if !ok {
		if len(l.peers) >= l.maxPeers && now.Sub(l.lastSweep) >= sweepEvery {
			l.sweep(now)
		}
		if len(l.peers) >= l.maxPeers {
			b = l.overflow
		} else {
			b = rate.NewLimiter(l.limit, l.burst)
			l.peers[key] = b
		}
	}
	return b.AllowN(now, n)
}

// sweep drops full buckets. l.mu must be held.
func (l *limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, b := range l.peers {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.peers, k)
		}
	}
}

// size returns the number of tracked peers.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.peers)
}
