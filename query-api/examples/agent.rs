//! An example downstream agent: follows one tenant's warehouse loads on `mi.events.loads.v1` and,
//! after each, asks the API for the tenant's KPIs over the days that changed and prints them.
//!
//! It is the loop `schemas/CONTRACT.md` describes: Kafka says *when* and *what range* changed, the
//! API answers *what the numbers are* (sums, ratios of sums, restatements resolved), with a
//! service token scoped to the tenant.
//!
//! ```sh
//! query-api token --tenant acme --role viewer --subject kpi-agent --service > /tmp/agent.jwt
//! cargo run -p mi-query-api --example agent -- --tenant acme --token-file /tmp/agent.jwt
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::NaiveDate;
use clap::Parser;
use mi_common::{Settings, clients};
use mi_schemas::{Codec, LoadEvent, Record};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// The tenant to follow (the token must be for the same tenant).
    #[arg(long)]
    tenant: String,
    /// File holding the service token (`query-api token --service`); never pass it on the
    /// command line, where other users of the machine can read it.
    #[arg(long)]
    token_file: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Stop after this many load events (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    events: usize,
    /// Read the topic from the beginning instead of only new loads.
    #[arg(long)]
    from_beginning: bool,
}

const KPIS: [&str; 8] = [
    "spend",
    "impressions",
    "clicks",
    "conversions",
    "ctr",
    "cpc",
    "cpa",
    "roas",
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?
        .trim()
        .to_owned();
    let settings: Settings = mi_common::settings::load(None)?;
    let group = format!(
        "example-agent-{}-{}",
        args.tenant,
        uuid::Uuid::new_v4().simple()
    );
    let mut config = clients::read_committed_consumer_config(&settings.kafka, &group);
    config.set(
        "auto.offset.reset",
        if args.from_beginning {
            "earliest"
        } else {
            "latest"
        },
    );
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[LoadEvent::TOPIC])?;
    let codec = Codec::new(clients::schema_registry(&settings.schema_registry));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    println!("following {} for tenant {}", LoadEvent::TOPIC, args.tenant);

    let mut seen = 0;
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(payload) = message.payload() else {
            continue;
        };
        let event: LoadEvent = match codec.decode(payload).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("skipping an undecodable load event: {e}");
                continue;
            }
        };
        if event.tenant_id != args.tenant || !event.table.starts_with("fact_ad") {
            continue;
        }
        let (Some(start), Some(end)) = (event.min_date, event.max_date) else {
            continue;
        };
        println!(
            "\nload {} ({} rows of {}) changed {start} .. {end}",
            event.batch_id, event.rows, event.table
        );
        print_kpis(&http, &args.api, &token, start, end).await?;
        seen += 1;
        if args.events > 0 && seen >= args.events {
            return Ok(());
        }
    }
}

async fn print_kpis(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    start: NaiveDate,
    end: NaiveDate,
) -> anyhow::Result<()> {
    let query = json!({
        "metrics": KPIS,
        "dimensions": ["platform"],
        "time": { "start": start, "end": end },
        "compare": "previous_period",
    });
    let response = http
        .post(format!("{api}/api/v1/query"))
        .bearer_auth(token)
        .json(&query)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        anyhow::bail!("the API answered {status}: {}", body["error"]["message"]);
    }
    let currencies: BTreeSet<String> = body["metadata"]["currencies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    println!(
        "{:<12} {}",
        "platform",
        KPIS.map(|k| format!("{k:>12}")).join("")
    );
    for row in body["data"].as_array().into_iter().flatten() {
        print_row(row["platform"].as_str().unwrap_or("?"), row);
    }
    print_row("total", &body["totals"]);
    let change = &body["compare"]["change"];
    if change.is_object() {
        let line: Vec<String> = KPIS
            .iter()
            .map(|k| match change[k].as_f64() {
                Some(c) => format!("{:>+11.1}%", c * 100.0),
                None => format!("{:>12}", "–"),
            })
            .collect();
        println!("{:<12} {}", "vs previous", line.join(""));
    }
    if currencies.len() > 1 {
        println!("note: money adds amounts in {currencies:?}");
    }
    Ok(())
}

fn print_row(label: &str, row: &Value) {
    let cells: Vec<String> = KPIS
        .iter()
        .map(|k| match row[k].as_f64() {
            Some(v) if v.fract() == 0.0 => format!("{v:>12.0}"),
            Some(v) => format!("{v:>12.4}"),
            None => format!("{:>12}", "–"),
        })
        .collect();
    println!("{label:<12} {}", cells.join(""));
}
