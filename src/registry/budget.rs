//! A request budget per registry: at most `requests_per_second`, at most `max_requests` in
//! one run, and a stop when the registry itself says few requests remain (`RateLimit-Remaining`
//! as Docker Hub sends it, or the IETF `RateLimit: …, remaining=N` form). Retry-After on 429
//! and 503 is honoured by the transport's retries. A spent budget makes every further request
//! to that registry fail at once with [`crate::registry::RegistryError::BudgetSpent`], so a run
//! stops cleanly and leaves the rest for the next one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// `rate_limits.<host>` in the job.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second at most (spread evenly).
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Requests in one run at most; then the run stops asking this registry.
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Stop when the registry says this many requests or fewer remain (`RateLimit-Remaining`).
    #[serde(default)]
    pub min_remaining: u64,
}

impl RateLimit {
    /// A one-line complaint about a bad value, or `None`.
    pub fn problem(&self) -> Option<String> {
        match self.requests_per_second {
            Some(r) if !(r.is_finite() && r > 0.0) => {
                Some(format!("requests_per_second: must be above 0, not {r}"))
            }
            _ if self.max_requests == Some(0) => {
                Some("max_requests: must be at least 1".to_string())
            }
            _ => None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    next_slot: Instant,
    used: u64,
    spent: Option<String>,
}

/// The live budget of one client.
#[derive(Debug)]
pub struct Budget {
    limit: RateLimit,
    inner: Mutex<Inner>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(RateLimit::default())
    }
}

impl Budget {
    pub fn new(limit: RateLimit) -> Budget {
        Budget {
            limit,
            inner: Mutex::new(Inner {
                next_slot: Instant::now(),
                used: 0,
                spent: None,
            }),
        }
    }

    /// Wait for the next request slot; `Err(reason)` when the budget is spent.
    pub async fn acquire(&self) -> Result<(), String> {
        let slot = {
            let mut inner = self.inner.lock().expect("budget lock");
            if let Some(reason) = &inner.spent {
                return Err(reason.clone());
            }
            if let Some(max) = self.limit.max_requests {
                if inner.used >= max {
                    let reason = format!("the job allows {max} requests per run");
                    inner.spent = Some(reason.clone());
                    return Err(reason);
                }
            }
            inner.used += 1;
            let now = Instant::now();
            let slot = inner.next_slot.max(now);
            if let Some(rps) = self.limit.requests_per_second {
                inner.next_slot = slot + Duration::from_secs_f64(1.0 / rps);
            }
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
        Ok(())
    }

    /// Read the registry's own count of remaining requests, if it sends one.
    pub fn observe(&self, headers: &HeaderMap) {
        if let Some(remaining) = remaining(headers) {
            if remaining <= self.limit.min_remaining {
                let mut inner = self.inner.lock().expect("budget lock");
                inner.spent.get_or_insert_with(|| {
                    format!(
                        "the registry says {remaining} requests remain (RateLimit-Remaining), at or below the {} kept in reserve",
                        self.limit.min_remaining
                    )
                });
            }
        }
    }

    /// Why the budget is spent, once it is.
    pub fn spent(&self) -> Option<String> {
        self.inner.lock().expect("budget lock").spent.clone()
    }

    /// Requests made (or started) so far.
    pub fn used(&self) -> u64 {
        self.inner.lock().expect("budget lock").used
    }
}

/// `RateLimit-Remaining: 76;w=21600`, `X-RateLimit-Remaining: 76` or `RateLimit: limit=100,
/// remaining=76, reset=30`.
fn remaining(headers: &HeaderMap) -> Option<u64> {
    let leading = |s: &str| -> Option<u64> {
        let digits: String = s.trim().chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    for name in ["ratelimit-remaining", "x-ratelimit-remaining"] {
        if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
            return leading(v);
        }
    }
    let combined = headers.get("ratelimit")?.to_str().ok()?;
    combined.split([',', ';']).find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("remaining"))
            .then(|| leading(v))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn reads_every_remaining_header_form() {
        let mut h = HeaderMap::new();
        assert_eq!(remaining(&h), None);
        h.insert(
            "ratelimit-remaining",
            HeaderValue::from_static("76;w=21600"),
        );
        assert_eq!(remaining(&h), Some(76));
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("5"));
        assert_eq!(remaining(&h), Some(5));
        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit",
            HeaderValue::from_static("limit=100, remaining=0, reset=30"),
        );
        assert_eq!(remaining(&h), Some(0));
    }

    #[tokio::test]
    async fn max_requests_then_spent_and_remaining_stops_early() {
        let b = Budget::new(RateLimit {
            max_requests: Some(2),
            ..RateLimit::default()
        });
        assert!(b.acquire().await.is_ok());
        assert!(b.acquire().await.is_ok());
        let e = b.acquire().await.unwrap_err();
        assert!(e.contains("2 requests per run"), "{e}");
        assert_eq!(b.used(), 2);

        let b = Budget::new(RateLimit {
            min_remaining: 10,
            ..RateLimit::default()
        });
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("11"));
        b.observe(&h);
        assert!(b.spent().is_none());
        h.insert("ratelimit-remaining", HeaderValue::from_static("10"));
        b.observe(&h);
        assert!(b
            .acquire()
            .await
            .unwrap_err()
            .contains("10 requests remain"));
    }

    #[tokio::test]
    async fn requests_per_second_spaces_requests() {
        let b = Budget::new(RateLimit {
            requests_per_second: Some(20.0),
            ..RateLimit::default()
        });
        let start = Instant::now();
        for _ in 0..5 {
            b.acquire().await.unwrap();
        }
        // Five slots at 50 ms apart: the fifth starts no earlier than 200 ms in.
        assert!(
            start.elapsed() >= Duration::from_millis(195),
            "{:?}",
            start.elapsed()
        );
    }
}
