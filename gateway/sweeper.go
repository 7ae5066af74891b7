package gateway

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/kurer/kurer/gateway/api"
	"github.com/kurer/kurer/gateway/store"
)

const sweepBatch = 500

// sweeper runs every SweepInterval until ctx ends: it returns ended leases
// to their mailboxes (or dead-letters a message out of attempts), expires
// every message past its expiry wherever it sits, purges old records and
// forgets old access tokens; every minute it drops stale partial uploads.
func (s *Server) sweeper(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	var uploadsSwept time.Time
	for {
		s.sweep(ctx)
		if now := s.now().UTC(); now.Sub(uploadsSwept) >= uploadSweepEvery {
			if !s.sweepUploads(ctx, now) {
				uploadsSwept = now
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep runs one pass; each transition is its own store transaction, so a
// crash in between loses nothing (the next pass finds what is left).
func (s *Server) sweep(ctx context.Context) {
	now := s.now().UTC()
	for {
		due, err := s.q.DueLeases(ctx, now, sweepBatch)
		if err != nil {
			s.log.Error("sweep leases", "err", err)
			break
		}
		for _, it := range due {
			s.endLease(ctx, it, now)
		}
		if len(due) < sweepBatch || ctx.Err() != nil {
			break
		}
	}
	for {
		due, err := s.q.DueExpiry(ctx, now, sweepBatch)
		if err != nil {
			s.log.Error("sweep expiry", "err", err)
			break
		}
		for _, it := range due {
			s.expire(ctx, it, now)
		}
		if len(due) < sweepBatch || ctx.Err() != nil {
			break
		}
	}
	if s.cfg.RecordRetention > 0 {
		if n, err := s.st.Purge(ctx, now.Add(-s.cfg.RecordRetention), 1000); err != nil {
			s.log.Error("purge records", "err", err)
		} else if n > 0 {
			s.log.Info("purged message records", "count", n)
		}
	}
	s.tokens.sweep(now.Add(-10 * time.Minute))
}

// uploadSweepEvery spaces the sweeps of partial uploads: they are kept
// for hours, and each sweep reads them all.
const uploadSweepEvery = time.Minute

// sweepUploads deletes partial uploads whose routing expired (they can
// never be accepted) or that were started more than UploadTTL ago, so that
// abandoned uploads do not fill the disk. A stale upload that is busy
// right now (its bytes arriving, or a sender asking for its offset) is
// left, and busy is true: the sweeper tries again at its next pass rather
// than a minute later, so a sender polling the offset cannot keep a stale
// upload alive.
func (s *Server) sweepUploads(ctx context.Context, now time.Time) (busy bool) {
	ids, err := s.st.StaleUploads(ctx, now, now.Add(-s.cfg.UploadTTL), sweepBatch)
	if err != nil {
		s.log.Error("sweep uploads", "err", err)
		return false
	}
	dropped := 0
	for _, id := range ids {
		if !s.lockUpload(id) {
			busy = true
			s.uploadsBusy.Add(1)
			continue
		}
		err := s.st.DropUpload(ctx, id)
		s.unlockUpload(id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			s.log.Error("drop stale upload", "id", id, "err", err)
			continue
		}
		dropped++
	}
	if dropped > 0 {
		s.log.Info("dropped stale partial uploads", "count", dropped)
	}
	return busy
}

func (s *Server) endLease(ctx context.Context, it store.Item, now time.Time) {
	if it.Kind == api.KindMessage && it.Attempts >= s.cfg.MaxAttempts {
		n, err := s.signer.notice(it.Routing, api.EventFailed, "max_attempts",
			"not acknowledged after "+strconv.Itoa(it.Attempts)+" deliveries", now)
		if err != nil {
			s.log.Error("sign failed notice", "err", err)
			return
		}
		err = s.q.DeadLetter(ctx, it.Routing.ID, it.LeaseUntil, now, n)
		if errors.Is(err, store.ErrStale) {
			return
		}
		if err != nil {
			s.log.Error("dead-letter", "id", it.Routing.ID, "err", err)
			return
		}
		s.met.transition(api.StateDeadLettered, it.Routing.Type)
		s.met.attempts.Observe(float64(it.Attempts))
		s.log.Warn("message dead-lettered", "id", it.Routing.ID, "attempts", it.Attempts)
		return
	}
	err := s.q.Release(ctx, it.Routing.ID, it.LeaseUntil, now)
	if errors.Is(err, store.ErrStale) {
		return
	}
	if err != nil {
		s.log.Error("release lease", "id", it.Routing.ID, "err", err)
		return
	}
	if it.Kind == api.KindMessage {
		s.met.released.Inc()
	}
}

func (s *Server) expire(ctx context.Context, it store.Item, now time.Time) {
	n, err := s.signer.notice(it.Routing, api.EventExpired, "expired", "", now)
	if err != nil {
		s.log.Error("sign expired notice", "err", err)
		return
	}
	err = s.q.Expire(ctx, it.Routing.ID, now, n)
	if errors.Is(err, store.ErrStale) {
		return
	}
	if err != nil {
		s.log.Error("expire", "id", it.Routing.ID, "err", err)
		return
	}
	s.met.transition(api.StateExpired, it.Routing.Type)
}
