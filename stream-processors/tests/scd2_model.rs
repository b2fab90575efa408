//! The SCD2 state machine against a reference model.
//!
//! The reference model is the definition of the history, written as plainly as possible: take
//! the distinct observations `(time, hash)` of an entity (the earliest extraction of each),
//! sort them, cut them into runs of equal hashes. Random streams of snapshots — with duplicates,
//! replayed prefixes, arbitrary order, restarts through serde — go through
//! [`EntityState::apply`], and a "downstream table" applies the emissions the way ClickHouse's
//! `ReplacingMergeTree(revision, is_deleted)` does. The table must equal the model.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use mi_common::Platform;
use mi_schemas::{DimCampaign, RawCampaign};
use mi_stream_processors::scd2::{
    Campaign, CampaignState, Entity, NaturalKey, Scd2Error, attributes_hash, hash_hex, observed_at,
    surrogate_key,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

const BASE: i64 = 1_764_000_000_000;

fn ts(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid instant")
}

/// A generated snapshot, small alphabets so that ties, changes and reverts are frequent.
#[derive(Debug, Clone)]
struct Snap {
    entity: u8,
    time: u8,
    attrs: u8,
    /// `Some(k)`: Meta-like, `changed_at` = time and extracted `k` seconds later.
    lag: Option<u8>,
    run: u8,
}

/// Three entities that share a campaign id but differ in account, tenant and platform.
fn entity_key(entity: u8) -> (&'static str, Platform, &'static str) {
    match entity % 3 {
        0 => ("acme", Platform::GoogleAds, "1"),
        1 => ("acme", Platform::GoogleAds, "2"),
        _ => ("globex", Platform::MetaAds, "1"),
    }
}

fn raw(s: &Snap) -> RawCampaign {
    let (tenant, platform, account) = entity_key(s.entity);
    let time = BASE + i64::from(s.time) * 1_000;
    let extracted = time + i64::from(s.lag.unwrap_or(0)) * 1_000;
    let (name, status, bidding) = match s.attrs % 4 {
        0 => ("A", "ENABLED", None),
        1 => ("B", "ENABLED", None),
        2 => ("A", "PAUSED", None),
        // Same as 0 but an empty string instead of None: a different version.
        _ => ("A", "ENABLED", Some(String::new())),
    };
    RawCampaign {
        tenant_id: tenant.into(),
        platform,
        account_id: account.into(),
        extracted_at: ts(extracted),
        run_id: format!("run-{extracted}-{}", s.run % 2),
        campaign_id: "11".into(),
        name: name.into(),
        status: status.into(),
        channel_type: Some("SEARCH".into()),
        bidding_strategy: bidding,
        budget_micros: Some(1_000_000),
        budget_period: Some("DAILY".into()),
        start_date: NaiveDate::from_ymd_opt(2026, 1, 1),
        end_date: None,
        changed_at: s.lag.map(|_| ts(time)),
    }
}

fn snap() -> impl Strategy<Value = Snap> {
    (0u8..3, 0u8..12, 0u8..4, prop::option::of(0u8..3), 0u8..2).prop_map(
        |(entity, time, attrs, lag, run)| Snap {
            entity,
            time,
            attrs,
            lag,
            run,
        },
    )
}

#[derive(Debug, Clone)]
struct Scenario {
    /// The multiset of snapshots, in arrival order (duplicates included).
    stream: Vec<RawCampaign>,
    /// How many of the first snapshots are redelivered after the stream (consumer restart).
    replay: usize,
    /// Where the processor restarts from its serialized state.
    restart: usize,
}

impl Scenario {
    fn fed(&self) -> Vec<RawCampaign> {
        let mut fed = self.stream.clone();
        fed.extend_from_slice(&self.stream[..self.replay]);
        fed
    }
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(snap(), 1..32),
        prop::collection::vec(any::<Index>(), 0..8),
    )
        .prop_flat_map(|(base, dups)| {
            let mut stream: Vec<RawCampaign> = base.iter().map(raw).collect();
            stream.extend(dups.iter().map(|i| raw(&base[i.index(base.len())])));
            (Just(stream).prop_shuffle(), any::<Index>(), any::<Index>())
        })
        .prop_map(|(stream, replay, restart)| {
            let n = stream.len();
            Scenario {
                replay: replay.index(n + 1),
                restart: restart.index(2 * n + 1),
                stream,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Reference model
// ---------------------------------------------------------------------------------------------

/// One version as the model defines it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ModelVersion {
    surrogate_key: String,
    version: i32,
    valid_from: i64,
    valid_to: Option<i64>,
    is_current: bool,
    attributes_hash: String,
    extracted_at: i64,
    run_id: String,
}

/// `(time, hash)` → earliest `(extracted_at, run_id)`.
type Observations = BTreeMap<(i64, u64), (i64, String)>;

fn model(snapshots: &[RawCampaign]) -> BTreeMap<NaturalKey, Vec<ModelVersion>> {
    // Distinct observations per entity, keeping the earliest (extracted_at, run_id) of each.
    let mut obs: BTreeMap<NaturalKey, Observations> = BTreeMap::new();
    for s in snapshots {
        let hash = attributes_hash::<Campaign>(&Campaign::attributes(s));
        let prov = (s.extracted_at.timestamp_millis(), s.run_id.clone());
        let entry = obs
            .entry(CampaignState::key_of(s))
            .or_default()
            .entry((observed_at::<Campaign>(s).timestamp_millis(), hash))
            .or_insert_with(|| prov.clone());
        if prov < *entry {
            *entry = prov;
        }
    }
    obs.into_iter()
        .map(|(key, obs)| {
            let obs: Vec<_> = obs.into_iter().collect();
            // Runs of equal hashes: the first observation of each.
            let starts: Vec<_> = obs
                .iter()
                .enumerate()
                .filter(|(i, ((_, h), _))| *i == 0 || obs[i - 1].0.1 != *h)
                .map(|(_, o)| o)
                .collect();
            let versions = starts
                .iter()
                .enumerate()
                .map(|(i, ((from, hash), (ext, run)))| ModelVersion {
                    surrogate_key: surrogate_key::<Campaign>(&key, *from, *hash),
                    version: i as i32 + 1,
                    valid_from: *from,
                    valid_to: starts.get(i + 1).map(|((t, _), _)| *t),
                    is_current: i + 1 == starts.len(),
                    attributes_hash: hash_hex(*hash),
                    extracted_at: *ext,
                    run_id: run.clone(),
                })
                .collect();
            (key, versions)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The system under test, and downstream
// ---------------------------------------------------------------------------------------------

type States = BTreeMap<NaturalKey, CampaignState>;

fn apply(states: &mut States, raw: &RawCampaign) -> Result<Vec<DimCampaign>, Scd2Error> {
    let state = states
        .entry(CampaignState::key_of(raw))
        .or_insert_with(|| CampaignState::for_snapshot(raw));
    let applied = state.apply(raw)?;
    assert!(applied.emit.is_empty() || applied.state_changed);
    Ok(applied.emit)
}

/// Newest revision per surrogate key wins; deleted rows are dropped at read time.
#[derive(Debug, Default)]
struct Downstream {
    rows: HashMap<String, DimCampaign>,
}

impl Downstream {
    fn absorb(&mut self, emitted: &[DimCampaign]) {
        for d in emitted {
            if let Some(old) = self.rows.get(&d.surrogate_key) {
                assert!(
                    d.revision > old.revision,
                    "revisions strictly increase per key: {} then {}",
                    old.revision,
                    d.revision
                );
            }
            self.rows.insert(d.surrogate_key.clone(), d.clone());
        }
    }

    /// The live rows, grouped by natural key, as model versions.
    fn table(&self) -> BTreeMap<NaturalKey, Vec<ModelVersion>> {
        let mut out: BTreeMap<NaturalKey, Vec<ModelVersion>> = BTreeMap::new();
        for d in self.rows.values().filter(|d| !d.is_deleted) {
            let key = NaturalKey {
                tenant_id: d.tenant_id.clone(),
                platform: d.platform,
                account_id: d.account_id.clone(),
                entity_id: d.campaign_id.clone(),
            };
            out.entry(key).or_default().push(ModelVersion {
                surrogate_key: d.surrogate_key.clone(),
                version: d.version,
                valid_from: d.valid_from.timestamp_millis(),
                valid_to: d.valid_to.map(|t| t.timestamp_millis()),
                is_current: d.is_current,
                attributes_hash: d.attributes_hash.clone(),
                extracted_at: d.extracted_at.timestamp_millis(),
                run_id: d.run_id.clone(),
            });
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| v.version);
        }
        out
    }
}

/// A state without its revision counter, which counts changes as this processor saw them and so
/// legitimately depends on arrival order; everything else must not.
fn without_revision(state: &CampaignState) -> serde_json::Value {
    let mut v = serde_json::to_value(state).expect("serializes");
    if let Some(o) = v.as_object_mut() {
        o.remove("rev");
    }
    v
}

fn restart(states: &States) -> States {
    let json = serde_json::to_string(states.values().collect::<Vec<_>>().as_slice())
        .expect("state serializes");
    let back: Vec<CampaignState> = serde_json::from_str(&json).expect("state deserializes");
    back.into_iter().map(|s| (s.key().clone(), s)).collect()
}

fn check(sc: &Scenario) -> Result<(), TestCaseError> {
    let fed = sc.fed();

    // The straight run, and one that restarts from serialized state at `sc.restart` (d).
    let mut states = States::new();
    let mut restarted = States::new();
    let mut down = Downstream::default();
    for (i, raw) in fed.iter().enumerate() {
        if i == sc.restart {
            restarted = restart(&restarted);
        }
        let out = apply(&mut states, raw).expect("applies");
        let out2 = apply(&mut restarted, raw).expect("applies after restart");
        prop_assert_eq!(&out, &out2, "restart changed the emissions at step {}", i);
        // (e) every emission belongs to the snapshot's entity.
        for d in &out {
            prop_assert_eq!(
                (&d.tenant_id, d.platform, &d.account_id, &d.campaign_id),
                (
                    &raw.tenant_id,
                    raw.platform,
                    &raw.account_id,
                    &raw.campaign_id
                )
            );
        }
        down.absorb(&out);
    }
    prop_assert_eq!(&states, &restarted);

    // (a) + (e): downstream equals the model, entity by entity.
    let expected = model(&sc.stream);
    prop_assert_eq!(&down.table(), &expected);
    for (key, state) in &states {
        let versions: Vec<_> = state
            .versions()
            .into_iter()
            .map(|v| ModelVersion {
                surrogate_key: v.surrogate_key,
                version: v.version,
                valid_from: v.valid_from.timestamp_millis(),
                valid_to: v.valid_to.map(|t| t.timestamp_millis()),
                is_current: v.is_current,
                attributes_hash: v.attributes_hash,
                extracted_at: v.extracted_at.timestamp_millis(),
                run_id: v.run_id,
            })
            .collect();
        prop_assert_eq!(Some(&versions), expected.get(key));
        prop_assert_eq!(state.key(), key);
    }

    // (c) re-applying anything already applied emits nothing and changes nothing.
    for raw in &sc.stream {
        let key = CampaignState::key_of(raw);
        let state = states.get_mut(&key).expect("applied before");
        let before = state.clone();
        let again = state.apply(raw).expect("re-applies");
        prop_assert!(again.emit.is_empty() && !again.state_changed);
        prop_assert_eq!(&*state, &before);
    }

    // (e) a state refuses another entity's snapshot, untouched.
    if let Some(other) = sc
        .stream
        .iter()
        .find(|r| CampaignState::key_of(r) != CampaignState::key_of(&sc.stream[0]))
    {
        let state = states
            .get_mut(&CampaignState::key_of(&sc.stream[0]))
            .expect("applied");
        let before = state.clone();
        let refused = matches!(state.apply(other), Err(Scd2Error::KeyMismatch { .. }));
        prop_assert!(refused, "another entity's snapshot must be refused");
        prop_assert_eq!(&*state, &before);
    }

    // (b) the same multiset in sorted order: same final state (but the revision) and table.
    let mut sorted = sc.stream.clone();
    sorted.sort_by_key(|r| {
        (
            observed_at::<Campaign>(r),
            r.extracted_at,
            r.run_id.clone(),
            r.name.clone(),
            r.status.clone(),
            r.bidding_strategy.clone(),
        )
    });
    let mut sorted_states = States::new();
    let mut sorted_down = Downstream::default();
    for raw in &sorted {
        let out = apply(&mut sorted_states, raw).expect("applies in order");
        sorted_down.absorb(&out);
    }
    prop_assert_eq!(
        sorted_states.keys().collect::<Vec<_>>(),
        states.keys().collect::<Vec<_>>()
    );
    for (key, state) in &states {
        prop_assert_eq!(
            without_revision(state),
            without_revision(&sorted_states[key])
        );
    }
    prop_assert_eq!(sorted_down.table(), down.table());
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default)
}

fn config(default_cases: u32) -> Config {
    Config {
        cases: cases(default_cases),
        // No regression files written into the source tree; failures print the minimal case.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn history_matches_the_model_under_duplicates_replays_reordering_and_restarts(
        sc in scenario()
    ) {
        check(&sc)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Folding (the optional memory horizon)
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(1_000))]

    /// After folding at a cutoff, the history stays exactly the model's over every accepted
    /// snapshot; only snapshots before the cutoff may be refused, and only with BeforeHorizon.
    #[test]
    fn folding_keeps_the_history_exact(
        sc in scenario(),
        fold_at in any::<Index>(),
        cutoff in 0i64..12,
    ) {
        let fed = sc.fed();
        let fold_at = fold_at.index(fed.len() + 1);
        let cutoff = ts(BASE + cutoff * 1_000);
        let mut states = States::new();
        let mut down = Downstream::default();
        let mut accepted = Vec::new();
        for (i, raw) in fed.iter().enumerate() {
            if i == fold_at {
                for s in states.values_mut() {
                    let before = s.versions();
                    let _ = s.fold_before(cutoff);
                    prop_assert_eq!(s.versions(), before);
                }
            }
            match apply(&mut states, raw) {
                Ok(out) => {
                    down.absorb(&out);
                    accepted.push(raw.clone());
                }
                Err(e) => {
                    let before_horizon = matches!(e, Scd2Error::BeforeHorizon { .. });
                    prop_assert!(before_horizon, "{}", e);
                    prop_assert!(i >= fold_at && observed_at::<Campaign>(raw) < cutoff);
                }
            }
        }
        prop_assert_eq!(down.table(), model(&accepted));
    }
}

// ---------------------------------------------------------------------------------------------
// Size of the state
// ---------------------------------------------------------------------------------------------

/// Measures the serialized state of a Google-like entity: 300 extractions (≈ 100 days at 3 a
/// day), 3 versions, real-looking UUID run ids. Run with `--nocapture` to see the numbers.
#[test]
fn state_size_for_three_versions_and_three_hundred_observations() {
    let mut state: Option<CampaignState> = None;
    for i in 0..300u32 {
        let attrs = match i {
            0..100 => 0,
            100..200 => 1,
            _ => 2,
        };
        let mut raw = raw(&Snap {
            entity: 0,
            time: 0,
            attrs,
            lag: None,
            run: 0,
        });
        // Every 8 hours, a little jitter.
        let t = BASE + i64::from(i) * 8 * 3_600_000 + i64::from(i % 7) * 1_234;
        raw.extracted_at = ts(t);
        raw.run_id = format!(
            "{:08x}-{:04x}-4abc-8def-{:012x}",
            i.wrapping_mul(2_654_435_761),
            i,
            t
        );
        let s = state.get_or_insert_with(|| CampaignState::for_snapshot(&raw));
        let _ = s.apply(&raw).unwrap();
    }
    let mut state = state.unwrap();
    assert_eq!((state.versions().len(), state.observations()), (3, 300));
    let json = serde_json::to_vec(&state).unwrap();
    println!(
        "SCD2 state, 3 versions / 300 observations: {} bytes JSON ({:.0} bytes per observation)",
        json.len(),
        json.len() as f64 / 300.0
    );
    assert!(json.len() < 20_000, "{} bytes", json.len());
    let before = state.versions();
    let dropped = state.fold_older_than(chrono::TimeDelta::days(30));
    let json = serde_json::to_vec(&state).unwrap();
    println!(
        "after folding to a 30-day horizon: {} observations, {} bytes JSON (dropped {dropped})",
        state.observations(),
        json.len()
    );
    assert_eq!(state.versions(), before);
    let back: CampaignState = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, state);
}
