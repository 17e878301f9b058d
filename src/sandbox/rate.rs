//! Rate-limit windows: the bookkeeping behind a `429`, kept free of I/O so it can be tested
//! with made-up instants.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How a rate limit counts requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WindowKind {
    /// At most `limit` requests in any span of `window` (each admitted request frees its slot
    /// `window` after it arrived).
    #[default]
    Sliding,
    /// At most `limit` requests per consecutive `window`, the first window starting when the
    /// limit was set; the count starts again at each window boundary.
    Fixed,
}

/// How Kounta's `X-Ratelimit-Reset` header is written on a `429`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResetStyle {
    /// Epoch seconds at which the window resets (the documented form).
    #[default]
    EpochSeconds,
    /// The number of seconds until the window resets (the "small number" form).
    DelaySeconds,
}

/// A rate limit: past `limit` requests per `window`, requests are answered `429` and not served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u32,
    /// The window length (a minute for the documented limits).
    pub window: Duration,
    /// Sliding or fixed window.
    pub kind: WindowKind,
    /// How Kounta writes `X-Ratelimit-Reset`; FarmFlow sends no such header.
    pub reset_header: ResetStyle,
    /// Whether a `429` carries `Retry-After` (Kounta sends it only sometimes).
    pub retry_after: bool,
}

impl RateLimit {
    /// `limit` requests per minute, sliding window, epoch-seconds reset, with `Retry-After`.
    pub fn per_minute(limit: u32) -> Self {
        RateLimit {
            limit,
            window: Duration::from_secs(60),
            kind: WindowKind::Sliding,
            reset_header: ResetStyle::EpochSeconds,
            retry_after: true,
        }
    }

    /// The same limit counted in fixed windows.
    pub fn fixed_window(mut self) -> Self {
        self.kind = WindowKind::Fixed;
        self
    }

    /// The same limit with `X-Ratelimit-Reset` written as a delay in seconds.
    pub fn reset_as_delay(mut self) -> Self {
        self.reset_header = ResetStyle::DelaySeconds;
        self
    }

    /// The same limit answering `429` without `Retry-After`.
    pub fn without_retry_after(mut self) -> Self {
        self.retry_after = false;
        self
    }
}

/// The outcome of offering one request to a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Served; `remaining` more fit in the current window.
    Admit { remaining: u32 },
    /// Refused; a slot frees up after `reset_in`.
    Refuse { reset_in: Duration },
}

/// The state of one rate limit.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) limit: RateLimit,
    /// Start of the current fixed window.
    started: Instant,
    /// Requests admitted in the current fixed window.
    count: u32,
    /// Arrival times of the admitted requests still inside the sliding window.
    admitted: VecDeque<Instant>,
}

impl Window {
    /// A fresh window whose first fixed period starts at `now`.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Window {
            limit,
            started: now,
            count: 0,
            admitted: VecDeque::new(),
        }
    }

    /// Offers one request arriving at `now`; an admitted request takes a slot.
    #[cfg(test)]
    pub(crate) fn offer(&mut self, now: Instant) -> Verdict {
        let verdict = self.check(now);
        if let Verdict::Admit { .. } = verdict {
            self.take(now);
        }
        verdict
    }

    /// Whether a request arriving at `now` would be admitted, without taking a slot.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let window = self.period();
        let used = match self.limit.kind {
            WindowKind::Sliding => {
                while let Some(&first) = self.admitted.front() {
                    if first + window <= now {
                        self.admitted.pop_front();
                    } else {
                        break;
                    }
                }
                self.admitted.len()
            }
            WindowKind::Fixed => {
                let elapsed = now.saturating_duration_since(self.started);
                if elapsed >= window {
                    let periods = elapsed.as_nanos() / window.as_nanos();
                    let skip = window.saturating_mul(u32::try_from(periods).unwrap_or(u32::MAX));
                    self.started += skip;
                    self.count = 0;
                }
                self.count as usize
            }
        };
        if used >= self.limit.limit as usize {
            let frees_at = match self.limit.kind {
                WindowKind::Sliding => self.admitted.front().map(|&first| first + window),
                WindowKind::Fixed => Some(self.started + window),
            };
            let reset_in = frees_at.map_or(window, |t| t.saturating_duration_since(now));
            Verdict::Refuse { reset_in }
        } else {
            Verdict::Admit {
                remaining: self.limit.limit - used as u32 - 1,
            }
        }
    }

    /// Takes a slot for a request arriving at `now` (after `check` admitted it).
    pub(crate) fn take(&mut self, now: Instant) {
        match self.limit.kind {
            WindowKind::Sliding => self.admitted.push_back(now),
            WindowKind::Fixed => self.count += 1,
        }
    }

    fn period(&self) -> Duration {
        self.limit.window.max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn sliding_window_frees_each_slot_a_window_after_its_request() {
        let t0 = Instant::now();
        let mut w = Window::new(RateLimit::per_minute(2), t0);
        assert_eq!(w.offer(t0), Verdict::Admit { remaining: 1 });
        assert_eq!(w.offer(t0 + secs(30)), Verdict::Admit { remaining: 0 });
        assert_eq!(
            w.offer(t0 + secs(40)),
            Verdict::Refuse { reset_in: secs(20) }
        );
        // The first request left the window at t0+60; the second is still in it.
        assert_eq!(w.offer(t0 + secs(60)), Verdict::Admit { remaining: 0 });
        assert_eq!(
            w.offer(t0 + secs(61)),
            Verdict::Refuse { reset_in: secs(29) }
        );
    }

    #[test]
    fn fixed_window_starts_counting_again_at_each_boundary() {
        let t0 = Instant::now();
        let mut w = Window::new(RateLimit::per_minute(2).fixed_window(), t0);
        assert!(matches!(w.offer(t0 + secs(50)), Verdict::Admit { .. }));
        assert!(matches!(w.offer(t0 + secs(59)), Verdict::Admit { .. }));
        assert_eq!(
            w.offer(t0 + secs(59)),
            Verdict::Refuse { reset_in: secs(1) }
        );
        // A sliding window would still refuse here; a fixed one has started over.
        assert_eq!(w.offer(t0 + secs(60)), Verdict::Admit { remaining: 1 });
        assert_eq!(w.offer(t0 + secs(61)), Verdict::Admit { remaining: 0 });
        // Several idle windows later the count is fresh and the boundary stays aligned.
        assert_eq!(w.offer(t0 + secs(250)), Verdict::Admit { remaining: 1 });
        assert_eq!(w.offer(t0 + secs(251)), Verdict::Admit { remaining: 0 });
        assert_eq!(
            w.offer(t0 + secs(251)),
            Verdict::Refuse { reset_in: secs(49) }
        );
    }

    #[test]
    fn a_zero_limit_refuses_everything() {
        let t0 = Instant::now();
        let mut sliding = Window::new(RateLimit::per_minute(0), t0);
        assert_eq!(sliding.offer(t0), Verdict::Refuse { reset_in: secs(60) });
        let mut fixed = Window::new(RateLimit::per_minute(0).fixed_window(), t0);
        assert_eq!(fixed.offer(t0), Verdict::Refuse { reset_in: secs(60) });
    }
}
