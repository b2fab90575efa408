//! Shared pieces of the benchmarks: the emulator served in-process and summary statistics.
//!
//! Benchmarks are programs, not tests: they print figures (min / median / max of several runs)
//! so that a noisy shared machine is visible in the spread rather than hidden in one number.

use std::time::{Duration, Instant};

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

/// `utime + stime` of a process from `/proc/<pid>/stat`, in clock ticks (see
/// [`clock_ticks_per_second`]); `None` once the process is gone or without procfs.
pub fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy and total clock ticks of the whole machine (every CPU) from the `cpu` line of
/// `/proc/stat`: how much of the machine everything — also other people's work — used.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user/nice).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// `USER_HZ`, the unit of [`proc_cpu_ticks`]: asked of `getconf CLK_TCK` once (the workspace
/// forbids the `unsafe` a `sysconf` call needs); 100, Linux's value everywhere in practice, if
/// that fails.
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// One look at a process: resident memory and CPU time so far.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub at: Instant,
    /// `VmRSS` in bytes.
    pub rss: Option<u64>,
    /// `utime + stime` in clock ticks.
    pub cpu_ticks: Option<u64>,
}

/// What a sampler saw: per watched process its samples, and the whole machine's CPU ticks.
#[derive(Debug, Default)]
pub struct Samples {
    pub names: Vec<String>,
    pub processes: Vec<Vec<ProcSample>>,
    /// (when, busy ticks, total ticks) of every CPU together.
    pub machine: Vec<(Instant, u64, u64)>,
}

/// Memory and CPU of one process over a window of time.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcUsage {
    pub rss_peak_mb: f64,
    pub rss_median_mb: f64,
    pub cpu_seconds: f64,
    /// CPU seconds per wall second: 1.0 is one core busy all the time.
    pub cores: f64,
    pub samples: usize,
}

const MIB: f64 = 1024.0 * 1024.0;

impl Samples {
    /// Usage of watched process `i` between `from` and `to` (samples taken inside the window;
    /// CPU time is the difference between the first and the last of them).
    pub fn usage(&self, i: usize, from: Instant, to: Instant) -> Option<ProcUsage> {
        let inside: Vec<&ProcSample> = self
            .processes
            .get(i)?
            .iter()
            .filter(|s| s.at >= from && s.at <= to)
            .collect();
        let rss: Vec<f64> = inside
            .iter()
            .filter_map(|s| s.rss)
            .map(|b| b as f64 / MIB)
            .collect();
        let cpu: Vec<(Instant, u64)> = inside
            .iter()
            .filter_map(|s| Some((s.at, s.cpu_ticks?)))
            .collect();
        let spread = Spread::of(&rss)?;
        let (cpu_seconds, cores) = match (cpu.first(), cpu.last()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                let seconds = c1.saturating_sub(*c0) as f64 / clock_ticks_per_second();
                (seconds, seconds / (*t1 - *t0).as_secs_f64())
            }
            _ => (0.0, 0.0),
        };
        Some(ProcUsage {
            rss_peak_mb: spread.max,
            rss_median_mb: spread.median,
            cpu_seconds,
            cores,
            samples: inside.len(),
        })
    }

    /// Busy cores of the whole machine (all processes, everyone's) between `from` and `to`.
    pub fn machine_cores(&self, from: Instant, to: Instant) -> Option<f64> {
        let inside: Vec<&(Instant, u64, u64)> = self
            .machine
            .iter()
            .filter(|(at, _, _)| *at >= from && *at <= to)
            .collect();
        let (t0, b0, _) = inside.first()?;
        let (t1, b1, _) = inside.last()?;
        (t1 > t0).then(|| {
            b1.saturating_sub(*b0) as f64 / clock_ticks_per_second() / (*t1 - *t0).as_secs_f64()
        })
    }
}

/// Samples the memory and CPU time of some processes (and the machine's CPU) on a thread of its
/// own, so that a busy async runtime cannot delay or skip samples.
pub struct ProcSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Samples>,
}

impl ProcSampler {
    /// Starts sampling `(name, pid)` every `every`.
    pub fn start(watched: Vec<(String, u32)>, every: Duration) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = Samples {
                names: watched.iter().map(|(n, _)| n.clone()).collect(),
                processes: vec![Vec::new(); watched.len()],
                machine: Vec::new(),
            };
            loop {
                let at = Instant::now();
                for (i, (_, pid)) in watched.iter().enumerate() {
                    out.processes[i].push(ProcSample {
                        at,
                        rss: proc_status_bytes(*pid, "VmRSS"),
                        cpu_ticks: proc_cpu_ticks(*pid),
                    });
                }
                if let Some((busy, total)) = machine_cpu_ticks() {
                    out.machine.push((at, busy, total));
                }
                if flag.load(Ordering::SeqCst) {
                    return out;
                }
                std::thread::sleep(every.saturating_sub(at.elapsed()));
            }
        });
        Self { stop, handle }
    }

    /// Takes one last sample and returns them all.
    pub fn stop(self) -> Samples {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.handle.join().unwrap_or_default()
    }
}

/// The `q`-quantile (0–1) of a sample, nearest-rank: an observed value, never an interpolation.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`), which the Java client's
/// default partitioner and librdkafka's `murmur2_random` (what our producers use) apply to keys.
pub fn kafka_murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition a keyed record lands on with Kafka's default (murmur2) partitioner.
pub fn kafka_partition(key: &[u8], partitions: u32) -> u32 {
    (kafka_murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The pid of the process listening on local TCP `port` (from `/proc/net/tcp{,6}` and the
/// processes' socket descriptors), to watch a service we did not start — whichever checkout's
/// `dev/stack` started it. `None` if not found or not visible to us.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            text.lines().skip(1).find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                (local_port == port && *f.get(3)? == "0A")
                    .then(|| f.get(9).map(|i| (*i).to_owned()))?
            })
        })?;
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            std::fs::read_dir(entry.path().join("fd"))
                .ok()?
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
                })
                .then_some(pid)
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

    #[test]
    fn reads_this_process_cpu_time() {
        // Burn a little CPU so that the counter is past zero on any machine.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(proc_cpu_ticks(std::process::id()).is_some());
        let (busy, total) = machine_cpu_ticks().unwrap_or_default();
        assert!(total > 0 && busy <= total);
        assert!(clock_ticks_per_second() > 0.0);
    }

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2 (signed ints there).
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(kafka_murmur2(data) as i32, expected, "{data:?}");
        }
    }

    #[test]
    fn quantiles_are_observed_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn finds_the_pid_of_a_listening_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
    }
}
