//! A token bucket: what the gateway writes to the API server (Events, status) comes at most
//! `burst` at once, then `per_second`. Time is passed in, so the arithmetic is tested
//! without sleeping.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_second` and `burst` are at least 1.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second: f64::from(per_second.max(1)),
            burst,
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes a token if one is there.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is there (zero: now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }

    /// Waits for a token and takes it.
    pub async fn take(&mut self) {
        loop {
            let wait = self.wait(Instant::now());
            if wait.is_zero() && self.try_take(Instant::now()) {
                return;
            }
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5, 10, t0);
        // 10,000 at once: only the burst passes.
        let passed = (0..10_000).filter(|_| b.try_take(t0)).count();
        assert_eq!(passed, 10);
        assert_eq!(b.wait(t0), Duration::from_millis(200));
        // One second later, five more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.try_take(t1)).count(), 5);
        // A long pause refills to the burst, never beyond it.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.try_take(t2)).count(), 10);
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1, 1, t0);
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0 - Duration::from_secs(5)));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        assert!(b.try_take(t0 + Duration::from_millis(1000)));
    }

    #[tokio::test]
    async fn take_waits_for_the_next_token() {
        let mut b = TokenBucket::new(20, 1, Instant::now());
        b.take().await;
        let before = Instant::now();
        b.take().await;
        let waited = before.elapsed();
        assert!(
            waited >= Duration::from_millis(45) && waited < Duration::from_millis(500),
            "{waited:?}"
        );
    }
}
