//! Generation throughput of the emulator, in-process (run with `--release`):
//!
//! ```text
//! cargo run --release -p mi-emulator --example throughput -- [accounts] [days]
//! ```
//!
//! Measures a whole backfill (default: 100 accounts × 90 days) three ways: the bare generator
//! (ad-day metrics), complete searchStream responses (GAQL → JSON batches, what an extractor
//! downloads), and GA4 finest-grain rows.

use std::time::Instant;

use mi_emulator::date::Day;
use mi_emulator::generator::metrics::ad_day;
use mi_emulator::generator::{GenConfig, Generator, Platform};
use mi_emulator::google_ads::render_query;
use mi_emulator::{AppState, Config};

fn main() {
    let mut args = std::env::args().skip(1);
    let accounts: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let days: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(90);
    let today = Day::parse("2025-06-01").unwrap_or(Day(20_240));
    let from = today.plus(-days);
    let to = today.plus(-1);
    let generator = Generator::new(GenConfig::default());

    // 1. Bare generator: every ad-day of every account (including the model build).
    let t = Instant::now();
    let mut rows = 0u64;
    let mut impressions = 0u64;
    for a in 0..accounts {
        let model = generator.model(Platform::GoogleAds, 1_000_000_000 + a, today);
        for (_, _, _, ad) in model.ads() {
            for d in from.through(to) {
                if let Some(m) = ad_day(ad, d, today) {
                    rows += 1;
                    impressions += m.impressions;
                }
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "generator:    {accounts} accounts x {days} days: {rows} ad-day rows in {:.3} s = {:.0} rows/s ({:.0} ns/row; checksum {impressions})",
        secs,
        rows as f64 / secs,
        secs * 1e9 / rows.max(1) as f64
    );

    // 2. searchStream responses, device-segmented (3 rows per ad-day), JSON included.
    let state = AppState::new(Config {
        today: Some(today),
        ..Config::default()
    });
    let query = format!(
        "SELECT campaign.id, ad_group.id, ad_group_ad.ad.id, metrics.impressions, metrics.clicks, metrics.cost_micros, \
         metrics.conversions, metrics.conversions_value, metrics.video_views, metrics.engagements, segments.date, segments.device \
         FROM ad_group_ad WHERE segments.date BETWEEN '{from}' AND '{to}'"
    );
    let t = Instant::now();
    let mut out_rows = 0usize;
    let mut bytes = 0usize;
    for a in 0..accounts {
        let body = render_query(&state, 1_000_000_000 + a, &query).unwrap_or_default();
        bytes += body.len();
        out_rows += body.windows(12).filter(|w| w == b"\"segments\":{").count();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "searchStream: {out_rows} device rows, {:.1} MB of JSON, rendered in {:.3} s = {:.0} rows/s",
        bytes as f64 / 1e6,
        secs,
        out_rows as f64 / secs
    );

    // 3. GA4 finest-grain rows.
    let t = Instant::now();
    let mut ga_rows = 0usize;
    let mut buf = Vec::new();
    for a in 0..accounts {
        let p = generator.property(300_000 + a, today);
        for d in from.through(to) {
            buf.clear();
            p.day_rows(d, false, &mut buf);
            ga_rows += buf.len();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "ga4:          {ga_rows} rows in {:.3} s = {:.0} rows/s",
        secs,
        ga_rows as f64 / secs
    );
}
