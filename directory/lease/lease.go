// Package lease elects one writer among several directory instances with a
// lease row in MariaDB/MySQL, and fences the writer's database writes with
// the lease's token (docs/design.md section 17.1).
//
// A lease is a row (name, holder, token, expires_at). Every comparison of
// time uses the database's clock (NOW(6)), never an instance's, so clock
// skew between instances does not matter; only the rate of each
// instance's monotonic clock does, for self-fencing (see [Lease.Deadline]).
//
//   - [Acquire] takes the lease if it is free or expired, incrementing its
//     token: each term of each holder has a distinct, increasing token.
//   - [Lease.Renew] extends the current term; it fails with [ErrLost] once
//     the term has expired or another holder has taken the lease, even if
//     nobody has taken it yet (then Acquire again for a new term).
//   - [Lease.Fence], inside a database transaction, locks the lease row in
//     share mode and fails with [ErrFenced] unless the term is still
//     current: a transaction that passes it commits before any successor
//     can acquire the lease (acquiring needs the row's exclusive lock), so
//     a deposed writer cannot write after its successor took over.
//   - [Lease.Release] ends the term at once, for a quick handover.
//
// A lease cannot fence writes to systems outside the database (Trillian's
// QueueLeaf has no conditional form): there the writer must stop by
// [Lease.Deadline], and the successor must wait as design.md 17.1 says.
package lease

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
)

// Errors. Each is wrapped with details; test with errors.Is.
var (
	// ErrHeld: another holder has the lease and it has not expired.
	ErrHeld = errors.New("lease: held by another instance")
	// ErrLost: the term ended (expired, released, or taken over).
	ErrLost = errors.New("lease: lost")
	// ErrFenced: a write was attempted under a term that is no longer
	// current.
	ErrFenced = errors.New("lease: fenced: the term is no longer current")
)

// Schema creates the lease table if it does not exist.
const Schema = `CREATE TABLE IF NOT EXISTS kt_lease (
  name       VARCHAR(190) NOT NULL PRIMARY KEY,
  holder     VARCHAR(190) NOT NULL,
  token      BIGINT UNSIGNED NOT NULL,
  expires_at DATETIME(6) NOT NULL
) ENGINE=InnoDB`

// CreateTable creates the lease table if it does not exist.
func CreateTable(ctx context.Context, db *sql.DB) error {
	if _, err := db.ExecContext(ctx, Schema); err != nil {
		return fmt.Errorf("lease: creating table: %w", err)
	}
	return nil
}

// Config describes a lease and its holder.
type Config struct {
	// DB is the database holding the kt_lease table (required).
	DB *sql.DB
	// Name names the lease (required), e.g. "directory-writer/" + origin:
	// one lease per log.
	Name string
	// Holder identifies this instance (required), unique among all
	// instances ever: include the host and a random part, so that a
	// restarted instance never continues its predecessor's term.
	Holder string
	// Duration is how long a term lasts after each acquire or renewal, by
	// the database's clock (default DefaultDuration). Renew well within
	// it, e.g. every Duration/3.
	Duration time.Duration
	// Margin is how long before the term's end, by this instance's
	// monotonic clock, [Lease.Deadline] falls (default DefaultMargin,
	// Duration/5). It must cover the longest write the holder starts
	// before its deadline and the rate difference between clocks.
	Margin time.Duration
}

// DefaultDuration is the default Config.Duration; the default
// Config.Margin is a fifth of the duration.
const DefaultDuration = 10 * time.Second

// DefaultMargin returns the default Config.Margin for a term of duration d.
func DefaultMargin(d time.Duration) time.Duration { return d / 5 }

func (c *Config) validate() error {
	switch {
	case c.DB == nil:
		return errors.New("lease: Config.DB is required")
	case c.Name == "" || len(c.Name) > 190:
		return fmt.Errorf("lease: Config.Name %q: want 1 to 190 bytes", c.Name)
	case c.Holder == "" || len(c.Holder) > 190:
		return fmt.Errorf("lease: Config.Holder %q: want 1 to 190 bytes", c.Holder)
	case c.Duration < 0 || (c.Duration > 0 && c.Duration < 10*time.Millisecond):
		return fmt.Errorf("lease: Config.Duration %v: want at least 10ms", c.Duration)
	}
	if c.Duration == 0 {
		c.Duration = DefaultDuration
	}
	if c.Margin == 0 {
		c.Margin = DefaultMargin(c.Duration)
	}
	if c.Margin < 0 || c.Margin >= c.Duration {
		return fmt.Errorf("lease: Config.Margin %v: want in [0, Duration %v)", c.Margin, c.Duration)
	}
	return nil
}

// Lease is one term of a held lease. Its methods are safe for concurrent
// use.
type Lease struct {
	cfg   Config
	token uint64

	mu       sync.Mutex
	deadline time.Time // guarded by mu; set by Acquire and every successful Renew
}

// HeldError is returned, wrapping ErrHeld, when another instance holds the
// lease.
type HeldError struct {
	Holder string
	Token  uint64
	// Remaining is how long the other term still runs, by the database's
	// clock.
	Remaining time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease: held by %q (token %d) for %v more", e.Holder, e.Token, e.Remaining)
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// Acquire takes the lease for a new term if it is free, expired or
// released, and returns it; otherwise it fails with a *HeldError. The new
// term's token is larger than every earlier term's.
//
// SPEC(design.md 17.1)
func Acquire(ctx context.Context, cfg Config) (*Lease, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		l, err := acquireOnce(ctx, cfg)
		if errors.Is(err, errNoRow) {
			// First use of this lease: create the row, expired, so
			// that it never blocks anyone, and try again. Concurrent
			// creators are all fine (INSERT IGNORE).
			if _, err = cfg.DB.ExecContext(ctx, `INSERT IGNORE INTO kt_lease (name, holder, token, expires_at) VALUES (?, '', 0, '1970-01-01 00:00:01')`, cfg.Name); err == nil {
				continue
			}
		}
		if isDeadlock(err) && attempt < 20 {
			// InnoDB rolled the transaction back; try again after a
			// short random pause, so that racing instances spread out.
			if err := sleep(ctx, time.Duration(1+rand.IntN(10))*time.Millisecond); err != nil {
				return nil, fmt.Errorf("lease: %w", err)
			}
			continue
		}
		if err != nil && !errors.Is(err, ErrHeld) {
			return nil, fmt.Errorf("lease: acquire: %w", err)
		}
		return l, err
	}
}

// errNoRow: the lease's row does not exist yet.
var errNoRow = errors.New("lease: no row yet")

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// SPEC(design.md 17.1)
func acquireOnce(ctx context.Context, cfg Config) (*Lease, error) {
	sent := time.Now()
	tx, err := cfg.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var (
		holder    string
		token     uint64
		remaining int64 // microseconds
	)
	err = tx.QueryRowContext(ctx, `SELECT holder, token, TIMESTAMPDIFF(MICROSECOND, NOW(6), expires_at) FROM kt_lease WHERE name = ? FOR UPDATE`, cfg.Name).Scan(&holder, &token, &remaining)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errNoRow
	}
	if err != nil {
		return nil, err
	}
	if remaining >= 0 {
		return nil, &HeldError{Holder: holder, Token: token, Remaining: time.Duration(remaining) * time.Microsecond}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE kt_lease SET holder = ?, token = token + 1, expires_at = NOW(6) + INTERVAL ? MICROSECOND WHERE name = ?`,
		cfg.Holder, cfg.Duration.Microseconds(), cfg.Name); err != nil {
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		return nil, err
	}
	l := &Lease{cfg: cfg, token: token + 1}
	l.deadline = sent.Add(cfg.Duration - cfg.Margin)
	return l, nil
}

// isDeadlock reports whether err is InnoDB's deadlock error (1213), after
// which the transaction was rolled back and may be retried.
func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}

// Campaign calls Acquire until it succeeds or ctx ends, waiting between
// attempts for the other term's remaining time (at most Duration/3).
//
// SPEC(design.md 17.1)
func Campaign(ctx context.Context, cfg Config) (*Lease, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for {
		l, err := Acquire(ctx, cfg)
		var held *HeldError
		switch {
		case err == nil:
			return l, nil
		case errors.As(err, &held):
			wait := min(max(held.Remaining, time.Millisecond), cfg.Duration/3)
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("lease: campaign: %w", ctx.Err())
			case <-t.C:
			}
		default:
			return nil, err
		}
	}
}

// Token is the term's fencing token.
func (l *Lease) Token() uint64 { return l.token }

// Holder is this instance's holder ID.
func (l *Lease) Holder() string { return l.cfg.Holder }

// Deadline is when, by this instance's monotonic clock, the holder must
// stop starting writes that the database cannot fence (appends to the
// log): the term's end as of the last successful acquire or renewal,
// counted from when that request was sent, minus Config.Margin.
//
// SPEC(design.md 17.1)
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// Valid reports whether the deadline has not passed.
func (l *Lease) Valid() bool { return time.Now().Before(l.Deadline()) }

// Renew extends the term by Config.Duration from now (database clock). It
// fails with ErrLost if the term has expired, was released, or another
// holder took the lease; the deadline then stays where it was.
//
// SPEC(design.md 17.1)
func (l *Lease) Renew(ctx context.Context) error {
	sent := time.Now()
	res, err := l.cfg.DB.ExecContext(ctx, `UPDATE kt_lease SET expires_at = NOW(6) + INTERVAL ? MICROSECOND
		WHERE name = ? AND holder = ? AND token = ? AND expires_at >= NOW(6)`,
		l.cfg.Duration.Microseconds(), l.cfg.Name, l.cfg.Holder, l.token)
	if err != nil {
		return fmt.Errorf("lease: renew: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("lease: renew: %w", err)
	}
	if n != 1 {
		return fmt.Errorf("lease %q token %d: %w", l.cfg.Name, l.token, ErrLost)
	}
	l.mu.Lock()
	l.deadline = sent.Add(l.cfg.Duration - l.cfg.Margin)
	l.mu.Unlock()
	return nil
}

// Release ends the term now, so that another instance can acquire the
// lease at once. Releasing a lost term is a no-op.
//
// SPEC(design.md 17.1)
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.deadline = time.Time{}
	l.mu.Unlock()
	_, err := l.cfg.DB.ExecContext(ctx, `UPDATE kt_lease SET expires_at = NOW(6) - INTERVAL 1 MICROSECOND
		WHERE name = ? AND holder = ? AND token = ?`, l.cfg.Name, l.cfg.Holder, l.token)
	if err != nil {
		return fmt.Errorf("lease: release: %w", err)
	}
	return nil
}

// Fence checks, inside tx, that this term is still current and unexpired,
// and holds the lease row's shared lock until tx ends, so that no
// successor can acquire the lease before tx commits. Call it in every
// transaction whose writes only the writer may make; it fails with
// ErrFenced otherwise, and the transaction must then be rolled back.
//
// SPEC(design.md 17.1)
func (l *Lease) Fence(ctx context.Context, tx *sql.Tx) error {
	var (
		holder string
		token  uint64
		live   bool
	)
	err := tx.QueryRowContext(ctx, `SELECT holder, token, expires_at >= NOW(6) FROM kt_lease WHERE name = ? LOCK IN SHARE MODE`, l.cfg.Name).Scan(&holder, &token, &live)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("lease %q has no row: %w", l.cfg.Name, ErrFenced)
	}
	if err != nil {
		return fmt.Errorf("lease: fence: %w", err)
	}
	if holder != l.cfg.Holder || token != l.token || !live {
		return fmt.Errorf("lease %q: term %d of %q, current term %d of %q (live %v): %w", l.cfg.Name, l.token, l.cfg.Holder, token, holder, live, ErrFenced)
	}
	return nil
}
