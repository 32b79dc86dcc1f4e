//! Shared limits in Redis, with fewer than one round trip per request.
//!
//! A node does not ask Redis about every request. It *leases* a few tokens
//! of a bucket (or a few requests of a quota) with one atomic script call and
//! admits requests from the lease; only when a lease runs dry does it ask
//! again. The scripts run on Redis's clock, so node clocks do not matter.
//!
//! Why the count stays exact: every token a node admits from was taken from
//! the shared bucket by a script, atomically, so the nodes together never
//! admit more than the bucket allows (burst + rate × time). What can be lost
//! is only tokens leased but not used; a lease is sized to ~50 ms of the
//! node's own demand and capped at 2 % of a second of the limit (¼ of the
//! burst at most), leftovers of a lease idle for 250 ms are given back, and
//! near the end of a quota grants shrink to one. So a shortfall is bounded by
//! what is leased or reserved but not yet used when the window closes —
//! nodes × cap plus the debt (e.g. 3 × 20 + 50 tokens at 1,000 rps: 1.1 %
//! of a 10 s window) — and the nodes never admit more than the bucket.
//!
//! When a bucket is empty, Redis lends the node its lease from the future:
//! the bucket goes into a bounded debt (≤ 50 ms of its rate) and the node
//! may use the tokens once the refill has paid that debt; until then it
//! refuses requests itself, without asking. Under overload each call thus
//! brings a lease home, and the nodes together call about rate / lease-size
//! times a second however many requests they refuse. (When even the debt is
//! full, Redis says how long until a reservation is possible.)
//!
//! One request draws from several limits (key, key+route, stage route,
//! quota). Leases make that all-or-nothing locally: a request is admitted
//! only when every lease it needs holds a token, and takes one from each.

use super::Decision;
use super::redis::{Redis, RedisError};
use crate::config::limits::{Limit, LimitKind};
use pylon_proto::config::v1::quota::Period;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// A lease serves about this much of the node's own demand.
const LEASE_HORIZON: f64 = 0.05;
/// At most this share of a second of the limit in one lease.
const LEASE_SHARE: f64 = 0.02;
/// Largest quota lease (grants shrink near the limit anyway).
const QUOTA_LEASE_CAP: u32 = 32;
/// Leftovers of a lease unused this long go back to Redis.
const IDLE_RETURN: Duration = Duration::from_millis(250);
/// Leases unused this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// How often the demand estimate is updated.
const DEMAND_WINDOW: Duration = Duration::from_millis(100);
/// The longest a node refuses on its own after Redis said "empty" before
/// asking again (quota periods end in days; a reset must not wait that long).
const MAX_LOCAL_DENIAL: Duration = Duration::from_secs(1);
/// Rounds of refill → retry before a request that keeps losing the race for
/// freshly leased tokens is throttled (all within one Redis timeout).
const MAX_ROUNDS: usize = 8;

/// `KEYS[1]` the bucket; ARGV rate, burst, want, refund.
/// Returns {granted, microseconds before the granted tokens may be used
/// (a reservation), or until a reservation is possible when none were}.
///
/// An empty bucket may go into debt by up to `rate × 50 ms` (at least one
/// lease): the tokens granted then are future ones, usable once the debt
/// they made is paid back by the refill. So every call under overload
/// brings a lease home, and the nodes' waits queue in order.
const RATE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local want, refund = tonumber(ARGV[3]), tonumber(ARGV[4])
local s = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at = tonumber(s[1]), tonumber(s[2])
if tokens == nil or at == nil then tokens, at = burst, now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000000)
  at = now
end
tokens = math.min(burst, tokens + refund)
local floor = -math.max(want, rate * 0.05)
local granted, wait = 0, 0
if want > 0 then
  if tokens >= 1 then
    granted = math.min(want, math.floor(tokens))
    tokens = tokens - granted
  elseif tokens - want >= floor then
    granted = want
    tokens = tokens - want
    wait = math.ceil(-tokens * 1000000 / rate)
  else
    wait = math.ceil((floor + want - tokens) * 1000000 / rate)
  end
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'at', string.format('%.0f', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - floor) * 1000 / rate) + 1000)
return {granted, wait}
"#;

/// `KEYS[1]` the quota; ARGV limit, period kind, offset, want, refund, and the
/// period and epoch the refund was granted in (a reset moves the epoch, so
/// tokens leased before it are not taken off the new count). Returns
/// {granted, microseconds until the next period when nothing was granted,
/// period start day, used, epoch}.
const QUOTA_SCRIPT_BODY: &str = r#"
local t = redis.call('TIME')
local secs = tonumber(t[1])
local limit, kind, offset = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want, refund = tonumber(ARGV[4]), tonumber(ARGV[5])
local refund_start, refund_epoch = tonumber(ARGV[6]), tonumber(ARGV[7])
local start, finish = period(math.floor(secs / 86400), kind, offset)
local s = redis.call('HMGET', KEYS[1], 'start', 'used', 'epoch')
local used = 0
local epoch = tonumber(s[3]) or 0
if tonumber(s[1]) == start then used = tonumber(s[2]) or 0 end
if refund > 0 and refund_start == start and refund_epoch == epoch then
  used = math.max(0, used - refund)
end
local remaining = limit - used
local granted, wait = 0, 0
if want > 0 then
  if remaining > 0 then
    granted = math.min(want, math.max(1, math.floor(remaining / 16)), remaining)
    used = used + granted
  else
    wait = (finish * 86400 - secs) * 1000000
  end
end
redis.call('HSET', KEYS[1], 'start', start, 'used', used, 'epoch', epoch)
redis.call('EXPIREAT', KEYS[1], finish * 86400 + 86400)
return {granted, wait, start, used, epoch}
"#;

/// Starts a quota's count over: a new epoch, nothing used.
const RESET_SCRIPT: &str = r#"
redis.call('HSET', KEYS[1], 'used', 0)
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], 40 * 86400) end
return epoch
"#;

static RESET: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(RESET_SCRIPT));
static RATE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(RATE_SCRIPT));
static QUOTA: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(&format!(
        "{}\n{QUOTA_SCRIPT_BODY}",
        pylon_common::quota::PERIOD_LUA
    ))
});

/// The Redis key of a limit: the id in a hash tag, so whatever one script
/// touches lives in one cluster slot.
pub fn redis_key(id: &str) -> String {
    format!("pylon:{{{id}}}")
}

pub fn period_kind(period: Period) -> u8 {
    match period {
        Period::Week => 2,
        Period::Month => 3,
        Period::Day | Period::Unspecified => 1,
    }
}

struct Lease {
    limit: Arc<Limit>,
    tokens: u32,
    /// Quota leases: the period (start, end day) and reset epoch their
    /// tokens belong to; they lapse with the period.
    period_start: i64,
    period_end: i64,
    epoch: i64,
    /// Requests waiting for this lease's refill (it asks for at least that many).
    waiting: u32,
    /// Redis said empty: refuse locally until then (at most
    /// [`MAX_LOCAL_DENIAL`], so a quota reset is seen soon)…
    denied_until: Option<Instant>,
    /// …and tell clients to come back then.
    retry_at: Instant,
    last_used: Instant,
    /// Requests seen in the current demand window, and the estimate (per second).
    window_start: Instant,
    window_count: u32,
    demand: f64,
    /// One refill in flight per lease; other requests wait for it.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Lease {
    fn new(limit: Arc<Limit>, now: Instant) -> Lease {
        Lease {
            limit,
            tokens: 0,
            period_start: 0,
            period_end: i64::MAX,
            epoch: 0,
            waiting: 0,
            denied_until: None,
            retry_at: now,
            last_used: now,
            window_start: now,
            window_count: 0,
            demand: 0.0,
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn note_request(&mut self, now: Instant) {
        self.window_count += 1;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= DEMAND_WINDOW {
            let observed = f64::from(self.window_count) / elapsed.as_secs_f64();
            // Follow rises at once, decays gently.
            self.demand = observed.max(self.demand * 0.5);
            self.window_start = now;
            self.window_count = 0;
        }
    }

    /// How many tokens to ask for.
    fn want(&self) -> u32 {
        let demand = (self.demand * LEASE_HORIZON)
            .ceil()
            .max(f64::from(self.waiting))
            .max(1.0);
        let cap = match self.limit.kind {
            LimitKind::Rate { rate, burst } => {
                (rate * LEASE_SHARE).min(f64::from(burst) / 4.0).floor().max(1.0)
            }
            LimitKind::Quota { .. } => f64::from(QUOTA_LEASE_CAP),
        };
        demand.min(cap) as u32
    }
}

pub struct Leases {
    redis: Arc<Redis>,
    table: Mutex<HashMap<Arc<str>, Lease>>,
}

impl Leases {
    pub fn start(redis: Arc<Redis>) -> Arc<Leases> {
        let leases = Arc::new(Leases {
            redis,
            table: Mutex::new(HashMap::new()),
        });
        tokio::spawn(return_idle(Arc::downgrade(&leases)));
        leases
    }

    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    /// Admits or refuses one request that draws on `limits`; an error when
    /// Redis could not be asked. The caller bounds the whole decision by
    /// the Redis timeout.
    pub async fn decide(
        &self,
        limits: &[&Arc<Limit>],
        account: &super::memory::LocalBucket,
    ) -> Result<Decision, RedisError> {
        for round in 0..MAX_ROUNDS {
            let lacking = {
                let now = Instant::now();
                let today = super::memory::unix_now().div_euclid(86_400);
                let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
                let mut lacking = Vec::new();
                for limit in limits {
                    let lease = table
                        .entry(limit.id.clone())
                        .or_insert_with(|| Lease::new(Arc::clone(limit), now));
                    if !Arc::ptr_eq(&lease.limit, limit) {
                        // A new config version: refunds follow the new limit.
                        lease.limit = Arc::clone(limit);
                    }
                    if let Some(until) = lease.denied_until {
                        if until > now {
                            let wait = lease.retry_at.saturating_duration_since(now);
                            return Ok(refusal(&limit.kind, wait));
                        }
                        lease.denied_until = None;
                    }
                    if today >= lease.period_end {
                        // Quota tokens of a period that has ended are void.
                        lease.tokens = 0;
                    }
                    if round == 0 {
                        lease.note_request(now);
                    }
                    if lease.tokens == 0 {
                        lease.waiting += 1;
                        lacking.push((Arc::clone(limit), lease.gate.clone()));
                    }
                }
                if lacking.is_empty() {
                    if let Err(wait) = account.take() {
                        return Ok(Decision::Throttled { retry_after: wait });
                    }
                    for limit in limits {
                        if let Some(lease) = table.get_mut(&limit.id) {
                            lease.tokens -= 1;
                            lease.last_used = now;
                        }
                    }
                    return Ok(Decision::Admit);
                }
                lacking
            };
            let refills =
                futures::future::join_all(lacking.into_iter().map(|(limit, gate)| self.refill(limit, gate)));
            for result in refills.await {
                result?;
            }
        }
        Ok(Decision::Throttled {
            retry_after: Duration::from_secs(1),
        })
    }

    /// Tops up one lease from Redis, unless another request already did.
    async fn refill(&self, limit: Arc<Limit>, gate: Arc<tokio::sync::Mutex<()>>) -> Result<(), RedisError> {
        let _turn = gate.lock().await;
        let want = {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            match table.get_mut(&limit.id) {
                Some(lease) if lease.tokens > 0 || lease.denied_until.is_some_and(|d| d > now) => {
                    lease.waiting = lease.waiting.saturating_sub(1);
                    return Ok(());
                }
                Some(lease) => {
                    let want = lease.want();
                    lease.waiting = 0;
                    want
                }
                None => 1,
            }
        };
        let grant = self.call(&limit, want, 0, 0, 0).await?;
        let now = Instant::now();
        {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            let lease = table
                .entry(limit.id.clone())
                .or_insert_with(|| Lease::new(Arc::clone(&limit), now));
            if let LimitKind::Quota { period, offset, .. } = limit.kind {
                if (grant.period_start, grant.epoch) != (lease.period_start, lease.epoch) {
                    // Tokens of another period or from before a reset: void.
                    lease.tokens = 0;
                }
                lease.period_end = pylon_common::quota::window(period, offset, grant.period_start).end;
            }
            lease.tokens += grant.granted;
            lease.period_start = grant.period_start;
            lease.epoch = grant.epoch;
            lease.last_used = now;
            if grant.granted == 0 {
                let wait = grant.wait.max(Duration::from_millis(1));
                lease.denied_until = Some(now + wait.min(MAX_LOCAL_DENIAL));
                lease.retry_at = now + wait;
            } else if !grant.wait.is_zero() {
                // Reserved tokens: usable once the bucket has refilled them.
                lease.denied_until = Some(now + grant.wait);
                lease.retry_at = now + grant.wait;
            }
        }
        Ok(())
    }

    async fn call(
        &self,
        limit: &Limit,
        want: u32,
        refund: u32,
        refund_start: i64,
        refund_epoch: i64,
    ) -> Result<Grant, RedisError> {
        let key = redis_key(&limit.id);
        match limit.kind {
            LimitKind::Rate { rate, burst } => {
                let (granted, wait): (u32, u64) = self
                    .redis
                    .run(|mut conn| async move {
                        RATE.key(&key)
                            .arg(rate)
                            .arg(burst)
                            .arg(want)
                            .arg(refund)
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await?;
                Ok(Grant {
                    granted,
                    wait: Duration::from_micros(wait),
                    period_start: 0,
                    epoch: 0,
                })
            }
            LimitKind::Quota {
                limit: max,
                period,
                offset,
            } => {
                let (granted, wait, start, _used, epoch): (u32, u64, i64, u64, i64) = self
                    .redis
                    .run(|mut conn| async move {
                        QUOTA
                            .key(&key)
                            .arg(max)
                            .arg(period_kind(period))
                            .arg(offset)
                            .arg(want)
                            .arg(refund)
                            .arg(refund_start)
                            .arg(refund_epoch)
                            .invoke_async(&mut conn)
                            .await
                    })
                    .await?;
                Ok(Grant {
                    granted,
                    wait: Duration::from_micros(wait),
                    period_start: start,
                    epoch,
                })
            }
        }
    }

    /// Gives back what idle leases hold and forgets long-idle ones.
    async fn return_leftovers(&self) {
        let now = Instant::now();
        let mut returns = Vec::new();
        {
            let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
            table.retain(|_, lease| {
                let idle = now.saturating_duration_since(lease.last_used);
                if lease.tokens > 0 && idle >= IDLE_RETURN {
                    returns.push((lease.limit.clone(), lease.tokens, lease.period_start, lease.epoch));
                    lease.tokens = 0;
                }
                idle < FORGET_AFTER || lease.denied_until.is_some_and(|d| d > now)
            });
        }
        let calls = returns
            .iter()
            .map(|(limit, tokens, start, epoch)| self.call(limit, 0, *tokens, *start, *epoch));
        for result in futures::future::join_all(calls).await {
            if let Err(e) = result {
                tracing::debug!(error = %e, "could not return leased tokens");
            }
        }
    }
}

struct Grant {
    granted: u32,
    wait: Duration,
    period_start: i64,
    epoch: i64,
}

fn refusal(kind: &LimitKind, wait: Duration) -> Decision {
    match kind {
        LimitKind::Rate { .. } => Decision::Throttled { retry_after: wait },
        LimitKind::Quota { .. } => Decision::QuotaExceeded { retry_after: wait },
    }
}

async fn return_idle(leases: Weak<Leases>) {
    let mut tick = tokio::time::interval(IDLE_RETURN / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(leases) = leases.upgrade() else { return };
        leases.return_leftovers().await;
    }
}

/// Quota `id` as counted in Redis for the period starting `start_day`.
pub async fn quota_used(redis: &Redis, id: &str, start_day: i64) -> Result<u64, RedisError> {
    let key = redis_key(id);
    let (start, used): (Option<i64>, Option<u64>) = redis
        .run(|mut conn| async move {
            redis::cmd("HMGET")
                .arg(&key)
                .arg("start")
                .arg("used")
                .query_async(&mut conn)
                .await
        })
        .await?;
    Ok(if start == Some(start_day) {
        used.unwrap_or(0)
    } else {
        0
    })
}

pub async fn quota_reset(redis: &Redis, id: &str) -> Result<(), RedisError> {
    let key = redis_key(id);
    redis
        .run(|mut conn| async move { RESET.key(&key).invoke_async::<i64>(&mut conn).await })
        .await
        .map(drop)
}
