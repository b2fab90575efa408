//! Redis, optional: the cache, the rate limiter and refresh tokens live there, but the API must
//! keep answering (uncached) when Redis is down. [`Redis::conn`] hands out the shared multiplexed
//! connection, reconnecting at most once per [`RETRY_EVERY`] while Redis is away, so a dead Redis
//! costs a request nothing but a failed lock check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// How long to wait before trying to reconnect to a Redis that refused us.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Redis is local and fast; a command slower than this is treated as Redis being down.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Redis {
    client: Option<redis::Client>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
}

impl Redis {
    /// A handle on `url`; nothing connects until the first use. A malformed URL disables Redis
    /// (and says so in the log).
    pub fn new(url: &str) -> Self {
        let client = match redis::Client::open(url) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "invalid Redis URL: cache, rate limits and refresh tokens are disabled");
                None
            }
        };
        Self {
            client,
            state: Arc::default(),
        }
    }

    /// The shared connection, or `None` while Redis is unreachable.
    pub async fn conn(&self) -> Option<MultiplexedConnection> {
        let client = self.client.as_ref()?;
        let mut state = self.state.lock().await;
        if let Some(conn) = &state.conn {
            return Some(conn.clone());
        }
        if state.failed_at.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return None;
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                state.conn = Some(conn.clone());
                state.failed_at = None;
                Some(conn)
            }
            Err(e) => {
                if state.failed_at.is_none() {
                    tracing::warn!(error = %e, "Redis unreachable: serving uncached");
                }
                state.failed_at = Some(Instant::now());
                None
            }
        }
    }

    /// Drops the connection after a command failed, so the next use reconnects.
    pub async fn reset(&self) {
        let mut state = self.state.lock().await;
        state.conn = None;
        state.failed_at = Some(Instant::now());
    }

    /// A slow answer under load is not Redis being down: only a broken connection is dropped.
    /// (Treating timeouts as outages turned the cache off for everyone for a second at a time
    /// under 100 concurrent clients, and the misses stampeded ClickHouse.)
    async fn forget_unless_slow(&self, e: &redis::RedisError) {
        if !e.is_timeout() {
            self.reset().await;
        }
    }

    /// Runs `cmd`; any failure (Redis down, timeout) resets the connection and yields `None`.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.conn().await?;
        match cmd.query_async::<T>(&mut conn).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "Redis command failed");
                self.forget_unless_slow(&e).await;
                None
            }
        }
    }

    /// Runs a Lua script the same way as [`Redis::query`].
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Option<T> {
        let mut conn = self.conn().await?;
        match invocation.invoke_async::<T>(&mut conn).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "Redis script failed");
                self.forget_unless_slow(&e).await;
                None
            }
        }
    }

    /// Whether Redis answers right now (for `/ready`).
    pub async fn is_up(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.is_some()
    }
}
