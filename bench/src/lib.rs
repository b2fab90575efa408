//! Shared pieces of the benchmarks: the emulator served in-process and summary statistics.
//!
//! Benchmarks are programs, not tests: they print figures (min / median / max of several runs)
//! so that a noisy shared machine is visible in the spread rather than hidden in one number.

use std::time::Duration;

/// Starts the platform emulator on a free loopback port with its clock pinned to `today`.
pub async fn start_emulator(today: chrono::NaiveDate) -> anyhow::Result<String> {
    use chrono::Datelike;
    let config = mi_emulator::Config {
        today: mi_emulator::date::Day::from_ymd(today.year(), today.month(), today.day()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, mi_emulator::router(config)).await;
    });
    Ok(url)
}

/// Min, median and max of a sample.
#[derive(Debug, Clone, Copy)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some(Self {
            min: v[0],
            median,
            max: v[v.len() - 1],
        })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.0} (min {:.0}, max {:.0})",
            self.median, self.min, self.max
        )
    }
}

pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, …) in bytes; `None` once the process
/// is gone or on a system without procfs.
pub fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = value.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_rss() {
        let rss = proc_status_bytes(std::process::id(), "VmRSS").unwrap_or_default();
        assert!(rss > 1024 * 1024, "{rss}");
        assert_eq!(proc_status_bytes(std::process::id(), "NoSuchField"), None);
    }
}
