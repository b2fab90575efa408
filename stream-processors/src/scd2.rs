//! SCD2 history of one entity (campaign, ad group or ad), exact under duplicates, replays and
//! reordering.
//!
//! # Model
//!
//! Every snapshot is an *observation* `(time, hash)`: `time` is `changed_at` when the platform
//! reports one (Meta's `updated_time`), else `extracted_at`; `hash` is [`attributes_hash`] of the
//! tracked attributes. The history of an entity is a pure function of its set of distinct
//! observations: sort them by `(time, hash)` (the hash breaks ties, so arrival order never
//! matters), cut the sequence into maximal runs of equal hashes, and each run is one version —
//! `valid_from` = time of its first observation, `valid_to` = the next version's `valid_from`,
//! the last one open and current. A→B→A gives three versions.
//!
//! Because the history is recomputed from a *set*, duplicates and replays are no-ops, and a late
//! snapshot lands where it belongs: it may split a version, move a boundary or merge two runs.
//! [`EntityState::apply`] returns exactly the records downstream needs to converge: every version
//! whose content changed, and a retraction (`is_deleted = true`) of every previously emitted
//! surrogate key that no longer exists. All records of one change carry the same `revision`, a
//! per-entity counter that increases by one per change, so "newest revision per surrogate key
//! wins, drop deleted" (ClickHouse `ReplacingMergeTree(revision, is_deleted)`) converges to the
//! current history.
//!
//! # Lineage
//!
//! A version's envelope (`extracted_at`, `run_id`) is that of the observation that opened it. A
//! late snapshot can turn any observation into the first of a run, so every distinct observation
//! keeps its provenance. When several extractions saw the same `(time, hash)` (Meta: every run
//! until the object changes again), the earliest `(extracted_at, run_id)` is kept — "the first
//! extraction that saw it" — which keeps the state independent of arrival order.
//!
//! # Memory
//!
//! Per entity: the natural key, one copy of the attributes per distinct hash in the history, and
//! per distinct observation its time, hash and provenance — in memory ~100 bytes (a B-tree entry
//! plus the boxed run id), serialized ~56 bytes of JSON, dominated by the 36-character run id
//! (measured: 3 versions over 300 observations = 16.9 KB of JSON). Meta entities stay tiny: one
//! observation per change of `updated_time`, however often they are extracted. Google entities
//! gain one observation per extraction (≈3 a day), so the loop should bound them with
//! [`EntityState::fold_older_than`]: observations older than the horizon that do not open a
//! version are dropped (the same entity folded to 30 days: 94 observations, 5.8 KB). History stays
//! exact for every snapshot at or after the horizon, and for older ones that do not re-cut
//! history (a no-op, as without folding); an older snapshot that would re-cut history is refused
//! with [`Scd2Error::BeforeHorizon`] (the loop dead-letters it) rather than placed inexactly.
//! Updating the history after a change is O(observations); a snapshot that changes nothing or
//! only extends the current run is O(log observations).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use mi_common::Platform;
use mi_schemas::{DimAd, DimAdGroup, DimCampaign, RawAd, RawAdGroup, RawCampaign};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::{xxh3_64, xxh3_128};

// ---------------------------------------------------------------------------------------------
// Keys and hashes
// ---------------------------------------------------------------------------------------------

/// The natural key of an entity: (tenant, platform, account, entity id). The changelog topic is
/// keyed by it; the entity kind is implied by the topic (and by the [`Entity`] type).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NaturalKey {
    pub tenant_id: String,
    pub platform: Platform,
    pub account_id: String,
    pub entity_id: String,
}

impl NaturalKey {
    /// The key as a borrowed view, for comparisons without allocating.
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            tenant_id: &self.tenant_id,
            platform: self.platform,
            account_id: &self.account_id,
            entity_id: &self.entity_id,
        }
    }
}

impl fmt::Display for NaturalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// A borrowed natural key, as read from a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    pub tenant_id: &'a str,
    pub platform: Platform,
    pub account_id: &'a str,
    pub entity_id: &'a str,
}

impl KeyRef<'_> {
    pub fn into_owned(self) -> NaturalKey {
        NaturalKey {
            tenant_id: self.tenant_id.to_owned(),
            platform: self.platform,
            account_id: self.account_id.to_owned(),
            entity_id: self.entity_id.to_owned(),
        }
    }
}

impl fmt::Display for KeyRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {} {} account {} entity {}",
            self.tenant_id, self.platform, self.account_id, self.entity_id
        )
    }
}

/// A canonical, unambiguous byte encoding for hashing: every string is length-prefixed (so
/// `("ab","c")` ≠ `("a","bc")`), every option carries a presence byte (so `None` ≠ `Some("")`),
/// integers are little-endian and fixed-width. It depends on nothing but these rules, so hashes
/// are stable across processes, machines and versions of Rust and of serde. Changing the
/// encoding of an entity changes every hash: bump the domain tag, never edit in place.
#[derive(Debug, Default)]
pub struct Canonical(Vec<u8>);

impl Canonical {
    /// A new encoding, opened by a domain tag that separates unrelated uses of the hash.
    pub fn new(domain: &str) -> Self {
        let mut c = Self(Vec::with_capacity(160));
        c.str(domain);
        c
    }
    pub fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s);
            }
        }
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.i64(v);
            }
        }
    }
    /// Dates as days since 1970-01-01, as on the wire.
    pub fn opt_date(&mut self, d: Option<NaiveDate>) {
        self.opt_i64(d.map(|d| i64::from(mi_schemas::date::to_days(d))));
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The hash of an entity's tracked attributes: xxh3-64 of their canonical encoding. 64 bits
/// suffice because hashes are only ever compared within one entity's history (a handful of
/// distinct values); [`EntityState::apply`] still refuses a collision rather than merge versions.
pub fn attributes_hash<E: Entity>(attrs: &E::Attrs) -> u64 {
    let mut c = Canonical::new(E::ATTRIBUTES_DOMAIN);
    E::encode(attrs, &mut c);
    xxh3_64(c.bytes())
}

/// The hex form of an attributes hash, as in `attributes_hash` of the dims (16 lowercase hex
/// digits, so it sorts like the number).
pub fn hash_hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// The surrogate key of a version: xxh3-128 (32 hex digits) of the entity kind, the natural key,
/// `valid_from` (millis) and the attributes hash. Deterministic, so reprocessing yields the same
/// keys. The hash is part of the key because two observations at the same instant with different
/// attributes make two versions with the same `valid_from` (the second one zero-length), and
/// those must not share a key. 128 bits because keys are unique across all tenants' versions.
pub fn surrogate_key<E: Entity>(
    key: &NaturalKey,
    valid_from_ms: i64,
    attributes_hash: u64,
) -> String {
    surrogate_key_of(E::KIND, key.as_ref(), valid_from_ms, attributes_hash)
}

fn surrogate_key_of(kind: &str, key: KeyRef<'_>, valid_from_ms: i64, hash: u64) -> String {
    let mut c = Canonical::new("mi.scd2.surrogate_key.v1");
    c.str(kind);
    c.str(key.tenant_id);
    c.str(key.platform.as_str());
    c.str(key.account_id);
    c.str(key.entity_id);
    c.i64(valid_from_ms);
    c.u64(hash);
    format!("{:032x}", xxh3_128(c.bytes()))
}

/// When a snapshot observed the entity: `changed_at` if the platform reports it, else
/// `extracted_at`.
pub fn observed_at<E: Entity>(raw: &E::Raw) -> DateTime<Utc> {
    let env = E::envelope(raw);
    env.changed_at.unwrap_or(env.extracted_at)
}

fn at(ms: i64) -> DateTime<Utc> {
    // Every stored instant came from a `DateTime` or was range-checked on deserialization.
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::UNIX_EPOCH)
}

// ---------------------------------------------------------------------------------------------
// The three entity kinds
// ---------------------------------------------------------------------------------------------

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    pub extracted_at: DateTime<Utc>,
    pub changed_at: Option<DateTime<Utc>>,
    pub run_id: &'a str,
}

/// Everything a dimension record carries besides the tracked attributes.
#[derive(Debug, Clone)]
pub struct VersionMeta<'a> {
    pub key: &'a NaturalKey,
    pub extracted_at: DateTime<Utc>,
    pub run_id: &'a str,
    pub surrogate_key: String,
    pub version: i32,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub is_current: bool,
    pub attributes_hash: String,
    pub revision: i64,
    pub is_deleted: bool,
}

/// One kind of SCD2 entity: how to read its natural key and tracked attributes from a raw
/// snapshot, how to hash them, and how to build its dimension record. The history logic is
/// written once, over this trait.
pub trait Entity {
    /// A short name, part of the surrogate key and of error messages.
    const KIND: &'static str;
    /// Domain tag of the attributes hash; bump its version if [`Entity::encode`] changes.
    const ATTRIBUTES_DOMAIN: &'static str;
    type Raw;
    type Dim;
    /// The tracked attributes (one copy per distinct hash is kept in the state).
    type Attrs: Clone + PartialEq + fmt::Debug + Serialize + DeserializeOwned;

    fn key(raw: &Self::Raw) -> KeyRef<'_>;
    fn envelope(raw: &Self::Raw) -> Envelope<'_>;
    fn attributes(raw: &Self::Raw) -> Self::Attrs;
    /// The canonical encoding of the attributes, field by field in a fixed order.
    fn encode(attrs: &Self::Attrs, out: &mut Canonical);
    fn to_dim(attrs: &Self::Attrs, meta: VersionMeta<'_>) -> Self::Dim;
}

/// Campaigns (`mi.raw.campaigns.v1` → `mi.dim.campaigns.v1`).
#[derive(Debug, Clone, Copy)]
pub enum Campaign {}
/// Ad groups, Meta ad sets (`mi.raw.ad_groups.v1` → `mi.dim.ad_groups.v1`).
#[derive(Debug, Clone, Copy)]
pub enum AdGroup {}
/// Ads (`mi.raw.ads.v1` → `mi.dim.ads.v1`).
#[derive(Debug, Clone, Copy)]
pub enum Ad {}

pub type CampaignState = EntityState<Campaign>;
pub type AdGroupState = EntityState<AdGroup>;
pub type AdState = EntityState<Ad>;

/// Tracked attributes of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignAttrs {
    pub name: String,
    pub status: String,
    pub channel_type: Option<String>,
    pub bidding_strategy: Option<String>,
    pub budget_micros: Option<i64>,
    pub budget_period: Option<String>,
    #[serde(with = "mi_schemas::date::option")]
    pub start_date: Option<NaiveDate>,
    #[serde(with = "mi_schemas::date::option")]
    pub end_date: Option<NaiveDate>,
}

/// Tracked attributes of an ad group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdGroupAttrs {
    pub campaign_id: String,
    pub name: String,
    pub status: String,
    pub ad_group_type: Option<String>,
    pub bid_micros: Option<i64>,
    pub budget_micros: Option<i64>,
}

/// Tracked attributes of an ad.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdAttrs {
    pub ad_group_id: String,
    pub campaign_id: String,
    pub name: String,
    pub status: String,
    pub ad_type: Option<String>,
    pub headline: Option<String>,
    pub final_url: Option<String>,
}

impl Entity for Campaign {
    const KIND: &'static str = "campaign";
    const ATTRIBUTES_DOMAIN: &'static str = "mi.scd2.campaign.attributes.v1";
    type Raw = RawCampaign;
    type Dim = DimCampaign;
    type Attrs = CampaignAttrs;

    fn key(raw: &RawCampaign) -> KeyRef<'_> {
        KeyRef {
            tenant_id: &raw.tenant_id,
            platform: raw.platform,
            account_id: &raw.account_id,
            entity_id: &raw.campaign_id,
        }
    }
    fn envelope(raw: &RawCampaign) -> Envelope<'_> {
        Envelope {
            extracted_at: raw.extracted_at,
            changed_at: raw.changed_at,
            run_id: &raw.run_id,
        }
    }
    fn attributes(raw: &RawCampaign) -> CampaignAttrs {
        CampaignAttrs {
            name: raw.name.clone(),
            status: raw.status.clone(),
            channel_type: raw.channel_type.clone(),
            bidding_strategy: raw.bidding_strategy.clone(),
            budget_micros: raw.budget_micros,
            budget_period: raw.budget_period.clone(),
            start_date: raw.start_date,
            end_date: raw.end_date,
        }
    }
    fn encode(a: &CampaignAttrs, c: &mut Canonical) {
        c.str(&a.name);
        c.str(&a.status);
        c.opt_str(a.channel_type.as_deref());
        c.opt_str(a.bidding_strategy.as_deref());
        c.opt_i64(a.budget_micros);
        c.opt_str(a.budget_period.as_deref());
        c.opt_date(a.start_date);
        c.opt_date(a.end_date);
    }
    fn to_dim(a: &CampaignAttrs, m: VersionMeta<'_>) -> DimCampaign {
        DimCampaign {
            tenant_id: m.key.tenant_id.clone(),
            platform: m.key.platform,
            account_id: m.key.account_id.clone(),
            extracted_at: m.extracted_at,
            run_id: m.run_id.to_owned(),
            campaign_id: m.key.entity_id.clone(),
            name: a.name.clone(),
            status: a.status.clone(),
            channel_type: a.channel_type.clone(),
            bidding_strategy: a.bidding_strategy.clone(),
            budget_micros: a.budget_micros,
            budget_period: a.budget_period.clone(),
            start_date: a.start_date,
            end_date: a.end_date,
            surrogate_key: m.surrogate_key,
            version: m.version,
            valid_from: m.valid_from,
            valid_to: m.valid_to,
            is_current: m.is_current,
            attributes_hash: m.attributes_hash,
            revision: m.revision,
            is_deleted: m.is_deleted,
        }
    }
}

impl Entity for AdGroup {
    const KIND: &'static str = "ad_group";
    const ATTRIBUTES_DOMAIN: &'static str = "mi.scd2.ad_group.attributes.v1";
    type Raw = RawAdGroup;
    type Dim = DimAdGroup;
    type Attrs = AdGroupAttrs;

    fn key(raw: &RawAdGroup) -> KeyRef<'_> {
        KeyRef {
            tenant_id: &raw.tenant_id,
            platform: raw.platform,
            account_id: &raw.account_id,
            entity_id: &raw.ad_group_id,
        }
    }
    fn envelope(raw: &RawAdGroup) -> Envelope<'_> {
        Envelope {
            extracted_at: raw.extracted_at,
            changed_at: raw.changed_at,
            run_id: &raw.run_id,
        }
    }
    fn attributes(raw: &RawAdGroup) -> AdGroupAttrs {
        AdGroupAttrs {
            campaign_id: raw.campaign_id.clone(),
            name: raw.name.clone(),
            status: raw.status.clone(),
            ad_group_type: raw.ad_group_type.clone(),
            bid_micros: raw.bid_micros,
            budget_micros: raw.budget_micros,
        }
    }
    fn encode(a: &AdGroupAttrs, c: &mut Canonical) {
        c.str(&a.campaign_id);
        c.str(&a.name);
        c.str(&a.status);
        c.opt_str(a.ad_group_type.as_deref());
        c.opt_i64(a.bid_micros);
        c.opt_i64(a.budget_micros);
    }
    fn to_dim(a: &AdGroupAttrs, m: VersionMeta<'_>) -> DimAdGroup {
        DimAdGroup {
            tenant_id: m.key.tenant_id.clone(),
            platform: m.key.platform,
            account_id: m.key.account_id.clone(),
            extracted_at: m.extracted_at,
            run_id: m.run_id.to_owned(),
            ad_group_id: m.key.entity_id.clone(),
            campaign_id: a.campaign_id.clone(),
            name: a.name.clone(),
            status: a.status.clone(),
            ad_group_type: a.ad_group_type.clone(),
            bid_micros: a.bid_micros,
            budget_micros: a.budget_micros,
            surrogate_key: m.surrogate_key,
            version: m.version,
            valid_from: m.valid_from,
            valid_to: m.valid_to,
            is_current: m.is_current,
            attributes_hash: m.attributes_hash,
            revision: m.revision,
            is_deleted: m.is_deleted,
        }
    }
}

impl Entity for Ad {
    const KIND: &'static str = "ad";
    const ATTRIBUTES_DOMAIN: &'static str = "mi.scd2.ad.attributes.v1";
    type Raw = RawAd;
    type Dim = DimAd;
    type Attrs = AdAttrs;

    fn key(raw: &RawAd) -> KeyRef<'_> {
        KeyRef {
            tenant_id: &raw.tenant_id,
            platform: raw.platform,
            account_id: &raw.account_id,
            entity_id: &raw.ad_id,
        }
    }
    fn envelope(raw: &RawAd) -> Envelope<'_> {
        Envelope {
            extracted_at: raw.extracted_at,
            changed_at: raw.changed_at,
            run_id: &raw.run_id,
        }
    }
    fn attributes(raw: &RawAd) -> AdAttrs {
        AdAttrs {
            ad_group_id: raw.ad_group_id.clone(),
            campaign_id: raw.campaign_id.clone(),
            name: raw.name.clone(),
            status: raw.status.clone(),
            ad_type: raw.ad_type.clone(),
            headline: raw.headline.clone(),
            final_url: raw.final_url.clone(),
        }
    }
    fn encode(a: &AdAttrs, c: &mut Canonical) {
        c.str(&a.ad_group_id);
        c.str(&a.campaign_id);
        c.str(&a.name);
        c.str(&a.status);
        c.opt_str(a.ad_type.as_deref());
        c.opt_str(a.headline.as_deref());
        c.opt_str(a.final_url.as_deref());
    }
    fn to_dim(a: &AdAttrs, m: VersionMeta<'_>) -> DimAd {
        DimAd {
            tenant_id: m.key.tenant_id.clone(),
            platform: m.key.platform,
            account_id: m.key.account_id.clone(),
            extracted_at: m.extracted_at,
            run_id: m.run_id.to_owned(),
            ad_id: m.key.entity_id.clone(),
            ad_group_id: a.ad_group_id.clone(),
            campaign_id: a.campaign_id.clone(),
            name: a.name.clone(),
            status: a.status.clone(),
            ad_type: a.ad_type.clone(),
            headline: a.headline.clone(),
            final_url: a.final_url.clone(),
            surrogate_key: m.surrogate_key,
            version: m.version,
            valid_from: m.valid_from,
            valid_to: m.valid_to,
            is_current: m.is_current,
            attributes_hash: m.attributes_hash,
            revision: m.revision,
            is_deleted: m.is_deleted,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// Which extraction saw an observation. Ordered by `(extracted_at, run_id)`: the smallest wins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Provenance {
    extracted_at: i64,
    run_id: Box<str>,
}

/// One version of the history, as computed from the observations.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    from: i64,
    hash: u64,
    to: Option<i64>,
    version: i32,
    current: bool,
    prov: Provenance,
}

/// A version of an entity's history, for inspection and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub surrogate_key: String,
    pub version: i32,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub is_current: bool,
    pub attributes_hash: String,
    pub extracted_at: DateTime<Utc>,
    pub run_id: String,
}

/// What [`EntityState::apply`] did.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Applied<D> {
    /// The dimension records to produce, retractions first, all with the same revision.
    pub emit: Vec<D>,
    /// Whether the state changed and must be written to the changelog. True whenever `emit` is
    /// not empty, and also when an observation was recorded that does not change the history
    /// yet (a late snapshot may later make it the start of a version).
    pub state_changed: bool,
}

impl<D> Applied<D> {
    fn unchanged() -> Self {
        Self {
            emit: Vec::new(),
            state_changed: false,
        }
    }
    fn recorded() -> Self {
        Self {
            emit: Vec::new(),
            state_changed: true,
        }
    }
}

/// Why a snapshot was refused; the state is unchanged. The loop dead-letters the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Scd2Error {
    #[error("snapshot of {kind} {got} applied to the state of {expected}")]
    KeyMismatch {
        kind: &'static str,
        expected: Box<NaturalKey>,
        got: Box<NaturalKey>,
    },
    #[error(
        "{kind} {key}: snapshot observed at {observed_at} would re-cut history before the folded horizon {horizon}"
    )]
    BeforeHorizon {
        kind: &'static str,
        key: Box<NaturalKey>,
        observed_at: DateTime<Utc>,
        horizon: DateTime<Utc>,
    },
    #[error(
        "{kind} {key}: attributes hash {hash} collides with different attributes; refusing to merge versions"
    )]
    HashCollision {
        kind: &'static str,
        key: Box<NaturalKey>,
        hash: String,
    },
}

impl Scd2Error {
    /// A stable short code, for metrics and the dead letter's reason.
    pub fn code(&self) -> &'static str {
        match self {
            Scd2Error::KeyMismatch { .. } => "key_mismatch",
            Scd2Error::BeforeHorizon { .. } => "before_horizon",
            Scd2Error::HashCollision { .. } => "hash_collision",
        }
    }
}

/// The SCD2 state of one entity. See the module docs for the model and its cost.
///
/// Serializes (serde, JSON or any binary format) to a compact, versioned form for the changelog
/// topic; deserializing checks it (format version, ordering, indices, instants, and that every
/// stored hash still matches its attributes, which catches an accidental change of the hash).
pub struct EntityState<E: Entity> {
    key: NaturalKey,
    /// Incremented once per change of the history; 0 before the first emission.
    revision: i64,
    /// One copy of the attributes per distinct hash ever observed (hashes never leave the
    /// history: observations are only added, and folding keeps every version's first one).
    attrs: BTreeMap<u64, E::Attrs>,
    /// The distinct observations, in history order.
    obs: BTreeMap<(i64, u64), Provenance>,
    /// Observations before this instant were folded (only version starts remain).
    horizon: Option<i64>,
    kind: PhantomData<fn() -> E>,
}

impl<E: Entity> Clone for EntityState<E> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            revision: self.revision,
            attrs: self.attrs.clone(),
            obs: self.obs.clone(),
            horizon: self.horizon,
            kind: PhantomData,
        }
    }
}

impl<E: Entity> PartialEq for EntityState<E> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.revision == other.revision
            && self.attrs == other.attrs
            && self.obs == other.obs
            && self.horizon == other.horizon
    }
}

impl<E: Entity> fmt::Debug for EntityState<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityState")
            .field("kind", &E::KIND)
            .field("key", &self.key)
            .field("revision", &self.revision)
            .field("attrs", &self.attrs)
            .field("obs", &self.obs)
            .field("horizon", &self.horizon)
            .finish()
    }
}

impl<E: Entity> EntityState<E> {
    /// An empty history for `key`.
    pub fn new(key: NaturalKey) -> Self {
        Self {
            key,
            revision: 0,
            attrs: BTreeMap::new(),
            obs: BTreeMap::new(),
            horizon: None,
            kind: PhantomData,
        }
    }

    /// An empty history for the entity of `raw` (the loop's `or_insert_with`).
    pub fn for_snapshot(raw: &E::Raw) -> Self {
        Self::new(E::key(raw).into_owned())
    }

    /// The natural key of `raw`, e.g. to look its state up.
    pub fn key_of(raw: &E::Raw) -> NaturalKey {
        E::key(raw).into_owned()
    }

    pub fn key(&self) -> &NaturalKey {
        &self.key
    }

    /// The revision of the newest emission (0 before the first).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Distinct observations held (the main memory cost).
    pub fn observations(&self) -> usize {
        self.obs.len()
    }

    /// Distinct attribute sets held.
    pub fn distinct_attributes(&self) -> usize {
        self.attrs.len()
    }

    /// Records one snapshot and returns what to emit. Duplicates, replays and snapshots that
    /// change nothing emit nothing and leave the state untouched (`state_changed == false`).
    pub fn apply(&mut self, raw: &E::Raw) -> Result<Applied<E::Dim>, Scd2Error> {
        let got = E::key(raw);
        if got != self.key.as_ref() {
            return Err(Scd2Error::KeyMismatch {
                kind: E::KIND,
                expected: Box::new(self.key.clone()),
                got: Box::new(got.into_owned()),
            });
        }
        let env = E::envelope(raw);
        let time = env
            .changed_at
            .unwrap_or(env.extracted_at)
            .timestamp_millis();
        let attrs = E::attributes(raw);
        let hash = attributes_hash::<E>(&attrs);
        if self.attrs.get(&hash).is_some_and(|known| *known != attrs) {
            return Err(Scd2Error::HashCollision {
                kind: E::KIND,
                key: Box::new(self.key.clone()),
                hash: hash_hex(hash),
            });
        }
        let prov = Provenance {
            extracted_at: env.extracted_at.timestamp_millis(),
            run_id: env.run_id.into(),
        };
        let obs_key = (time, hash);

        if let Some(known) = self.obs.get(&obs_key) {
            // Seen before: only an earlier extraction of the same observation changes anything.
            if prov >= *known {
                return Ok(Applied::unchanged());
            }
            if !self.starts_version(obs_key) {
                self.obs.insert(obs_key, prov);
                return Ok(Applied::recorded());
            }
            let old = self.rows();
            self.obs.insert(obs_key, prov);
            return Ok(self.emit_diff(&old));
        }

        let pred_hash = self.obs.range(..obs_key).next_back().map(|(&(_, h), _)| h);
        if pred_hash == Some(hash) {
            // Inside a run: the history is unchanged, but the observation may open a version
            // later (if a late snapshot lands right before it), so it is recorded — unless it is
            // before the horizon, where runs are folded to their first observation anyway.
            if self.horizon.is_some_and(|h| time < h) {
                return Ok(Applied::unchanged());
            }
            self.obs.insert(obs_key, prov);
            return Ok(Applied::recorded());
        }
        if let Some(horizon) = self.horizon
            && time < horizon
            && pred_hash.is_some()
        {
            // It would open a version that ends at the next observation of the run it cuts,
            // which may have been folded away: the history there is no longer known exactly.
            return Err(Scd2Error::BeforeHorizon {
                kind: E::KIND,
                key: Box::new(self.key.clone()),
                observed_at: at(time),
                horizon: at(horizon),
            });
        }
        let old = self.rows();
        self.attrs.entry(hash).or_insert(attrs);
        self.obs.insert(obs_key, prov);
        Ok(self.emit_diff(&old))
    }

    /// The current history, as dimension records at the current revision (none deleted): to
    /// republish an entity, or to seed a fresh downstream table.
    pub fn dims(&self) -> Vec<E::Dim> {
        self.rows()
            .iter()
            .filter_map(|row| self.dim(row, self.revision, false))
            .collect()
    }

    /// The current history, for inspection.
    pub fn versions(&self) -> Vec<Version> {
        self.rows()
            .into_iter()
            .map(|row| Version {
                surrogate_key: surrogate_key_of(E::KIND, self.key.as_ref(), row.from, row.hash),
                version: row.version,
                valid_from: at(row.from),
                valid_to: row.to.map(at),
                is_current: row.current,
                attributes_hash: hash_hex(row.hash),
                extracted_at: at(row.prov.extracted_at),
                run_id: row.prov.run_id.into(),
            })
            .collect()
    }

    /// The current version's attributes, if any.
    pub fn current_attributes(&self) -> Option<&E::Attrs> {
        let (&(_, hash), _) = self.obs.last_key_value()?;
        self.attrs.get(&hash)
    }

    /// Drops the observations before `cutoff` that do not open a version, bounding memory. The
    /// history is unchanged (nothing to emit); afterwards a snapshot before the horizon that
    /// would re-cut history is refused with [`Scd2Error::BeforeHorizon`]. The horizon only moves
    /// forward. Returns how many observations were dropped.
    pub fn fold_before(&mut self, cutoff: DateTime<Utc>) -> usize {
        let cutoff = cutoff.timestamp_millis();
        if self.horizon.is_some_and(|h| h >= cutoff) {
            return 0;
        }
        let mut prev = None;
        let mut drop = Vec::new();
        for (&(t, h), _) in self.obs.range(..(cutoff, 0)) {
            if prev == Some(h) {
                drop.push((t, h));
            }
            prev = Some(h);
        }
        for k in &drop {
            self.obs.remove(k);
        }
        self.horizon = Some(cutoff);
        drop.len()
    }

    /// [`EntityState::fold_before`] the newest observation minus `horizon` (e.g. 30 days):
    /// deterministic, independent of the wall clock.
    pub fn fold_older_than(&mut self, horizon: TimeDelta) -> usize {
        let Some((&(newest, _), _)) = self.obs.last_key_value() else {
            return 0;
        };
        let cutoff = newest.saturating_sub(horizon.num_milliseconds());
        self.fold_before(at(cutoff))
    }

    /// Whether the observation `key` (present) opens a version.
    fn starts_version(&self, key: (i64, u64)) -> bool {
        self.obs
            .range(..key)
            .next_back()
            .is_none_or(|(&(_, h), _)| h != key.1)
    }

    /// The history: one row per maximal run of equal hashes. O(observations).
    fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        let mut prev = None;
        for (&(t, h), p) in &self.obs {
            if prev == Some(h) {
                continue;
            }
            prev = Some(h);
            if let Some(last) = rows.last_mut() {
                last.to = Some(t);
            }
            rows.push(Row {
                from: t,
                hash: h,
                to: None,
                version: i32::try_from(rows.len() + 1).unwrap_or(i32::MAX),
                current: false,
                prov: p.clone(),
            });
        }
        if let Some(last) = rows.last_mut() {
            last.current = true;
        }
        rows
    }

    /// Compares the history before a change with the current one: retracts the versions that
    /// disappeared, emits those that are new or whose content changed, under a new revision.
    fn emit_diff(&mut self, old: &[Row]) -> Applied<E::Dim> {
        let new = self.rows();
        let mut retract: Vec<&Row> = Vec::new();
        let mut upsert: Vec<&Row> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            let order = match (old.get(i), new.get(j)) {
                (Some(o), Some(n)) => (o.from, o.hash).cmp(&(n.from, n.hash)),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    retract.extend(old.get(i));
                    i += 1;
                }
                Ordering::Greater => {
                    upsert.extend(new.get(j));
                    j += 1;
                }
                Ordering::Equal => {
                    if old.get(i) != new.get(j) {
                        upsert.extend(new.get(j));
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        if retract.is_empty() && upsert.is_empty() {
            return Applied::recorded();
        }
        self.revision += 1;
        let revision = self.revision;
        let emit = retract
            .into_iter()
            .filter_map(|row| self.dim(row, revision, true))
            .chain(
                upsert
                    .into_iter()
                    .filter_map(|row| self.dim(row, revision, false)),
            )
            .collect();
        Applied {
            emit,
            state_changed: true,
        }
    }

    /// The dimension record of a row. A retraction repeats the row as last emitted, with
    /// `is_deleted` and, so that a reader forgetting to filter deletions never sees two current
    /// versions, `is_current = false`.
    fn dim(&self, row: &Row, revision: i64, is_deleted: bool) -> Option<E::Dim> {
        // Every hash in the history has its attributes (checked on deserialization too).
        let attrs = self.attrs.get(&row.hash)?;
        Some(E::to_dim(
            attrs,
            VersionMeta {
                key: &self.key,
                extracted_at: at(row.prov.extracted_at),
                run_id: &row.prov.run_id,
                surrogate_key: surrogate_key_of(E::KIND, self.key.as_ref(), row.from, row.hash),
                version: row.version,
                valid_from: at(row.from),
                valid_to: row.to.map(at),
                is_current: row.current && !is_deleted,
                attributes_hash: hash_hex(row.hash),
                revision,
                is_deleted,
            },
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Serialized form
// ---------------------------------------------------------------------------------------------

const FORMAT: u8 = 1;

/// The serialized state. Observations are `(time delta from the previous observation, index of
/// their hash in attrs, extracted_at − time, run_id)`: small numbers instead of 13-digit instants
/// and 20-digit hashes. Plain tuples and no skipped fields, so non-self-describing formats
/// (bincode, postcard) work as well as JSON.
#[derive(Serialize, Deserialize)]
struct Wire<A, S> {
    v: u8,
    key: NaturalKey,
    rev: i64,
    horizon: Option<i64>,
    attrs: Vec<(u64, A)>,
    obs: Vec<(i64, u32, i64, S)>,
}

impl<E: Entity> Serialize for EntityState<E> {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        let index: BTreeMap<u64, u32> = self
            .attrs
            .keys()
            .enumerate()
            .map(|(i, &h)| (h, u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        let mut prev = 0i64;
        let obs = self
            .obs
            .iter()
            .map(|(&(t, h), p)| {
                let delta = t.wrapping_sub(prev);
                prev = t;
                let idx = index.get(&h).copied().unwrap_or(u32::MAX);
                (delta, idx, p.extracted_at.wrapping_sub(t), &*p.run_id)
            })
            .collect();
        Wire {
            v: FORMAT,
            key: self.key.clone(),
            rev: self.revision,
            horizon: self.horizon,
            attrs: self.attrs.iter().map(|(&h, a)| (h, a)).collect(),
            obs,
        }
        .serialize(s)
    }
}

impl<'de, E: Entity> Deserialize<'de> for EntityState<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::<E::Attrs, String>::deserialize(d)?;
        Self::from_wire(wire).map_err(serde::de::Error::custom)
    }
}

impl<E: Entity> EntityState<E> {
    fn from_wire(w: Wire<E::Attrs, String>) -> Result<Self, String> {
        if w.v != FORMAT {
            return Err(format!("unknown SCD2 state format {}", w.v));
        }
        let valid = |ms: i64| DateTime::from_timestamp_millis(ms).is_some();
        let mut hashes = Vec::with_capacity(w.attrs.len());
        let mut attrs = BTreeMap::new();
        for (hash, a) in w.attrs {
            let actual = attributes_hash::<E>(&a);
            if actual != hash {
                return Err(format!(
                    "{} {}: stored hash {} does not match its attributes ({}): did the attribute encoding change?",
                    E::KIND,
                    w.key,
                    hash_hex(hash),
                    hash_hex(actual)
                ));
            }
            hashes.push(hash);
            attrs.insert(hash, a);
        }
        let mut obs = BTreeMap::new();
        let mut time = 0i64;
        let mut last = None;
        for (delta, idx, ext_offset, run_id) in w.obs {
            time = time
                .checked_add(delta)
                .ok_or("observation time overflows")?;
            let extracted_at = time
                .checked_add(ext_offset)
                .ok_or("extraction time overflows")?;
            if !valid(time) || !valid(extracted_at) {
                return Err(format!("instant out of range: {time} / {extracted_at}"));
            }
            let hash = *usize::try_from(idx)
                .ok()
                .and_then(|i| hashes.get(i))
                .ok_or_else(|| format!("observation refers to unknown attributes #{idx}"))?;
            let key = (time, hash);
            if last.is_some_and(|l| l >= key) {
                return Err("observations out of order".to_owned());
            }
            last = Some(key);
            obs.insert(
                key,
                Provenance {
                    extracted_at,
                    run_id: run_id.into(),
                },
            );
        }
        if w.horizon.is_some_and(|h| !valid(h)) {
            return Err("horizon out of range".to_owned());
        }
        Ok(Self {
            key: w.key,
            revision: w.rev,
            attrs,
            obs,
            horizon: w.horizon,
            kind: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ts(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).single().unwrap()
    }

    fn campaign(t: i64, name: &str) -> RawCampaign {
        RawCampaign {
            tenant_id: "acme".into(),
            platform: Platform::GoogleAds,
            account_id: "123".into(),
            extracted_at: ts(t),
            run_id: format!("run-{t}"),
            campaign_id: "11".into(),
            name: name.into(),
            status: "ENABLED".into(),
            channel_type: Some("SEARCH".into()),
            bidding_strategy: None,
            budget_micros: Some(50_000_000),
            budget_period: Some("DAILY".into()),
            start_date: NaiveDate::from_ymd_opt(2026, 11, 1),
            end_date: None,
            changed_at: None,
        }
    }

    fn state() -> CampaignState {
        CampaignState::for_snapshot(&campaign(0, "x"))
    }

    fn apply(s: &mut CampaignState, raw: &RawCampaign) -> Vec<DimCampaign> {
        s.apply(raw).unwrap().emit
    }

    /// (name, version, valid_from, valid_to, is_current, is_deleted) of each record.
    fn brief(d: &[DimCampaign]) -> Vec<(String, i32, i64, Option<i64>, bool, bool)> {
        d.iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.version,
                    d.valid_from.timestamp_millis(),
                    d.valid_to.map(|t| t.timestamp_millis()),
                    d.is_current,
                    d.is_deleted,
                )
            })
            .collect()
    }

    #[test]
    fn new_entity_opens_version_one() {
        let mut s = state();
        let out = apply(&mut s, &campaign(1_000, "A"));
        assert_eq!(brief(&out), [("A".into(), 1, 1_000, None, true, false)]);
        assert_eq!(out[0].revision, 1);
        assert_eq!(out[0].run_id, "run-1000");
        assert_eq!(out[0].campaign_id, "11");
        assert_eq!(out[0].surrogate_key.len(), 32);
        assert_eq!(out[0].attributes_hash.len(), 16);
    }

    #[test]
    fn same_hash_emits_nothing_and_duplicates_change_nothing() {
        let mut s = state();
        let _ = apply(&mut s, &campaign(1_000, "A"));
        let before = s.clone();
        let dup = s.apply(&campaign(1_000, "A")).unwrap();
        assert_eq!(dup, Applied::unchanged());
        assert_eq!(s, before, "a duplicate leaves the state untouched");
        // A later extraction with the same attributes: recorded (it could open a version
        // later), but nothing to emit and the revision stays.
        let later = s.apply(&campaign(2_000, "A")).unwrap();
        assert!(later.emit.is_empty() && later.state_changed);
        assert_eq!(s.revision(), 1);
        assert_eq!(s.versions().len(), 1);
    }

    #[test]
    fn change_closes_current_and_opens_next() {
        let mut s = state();
        let _ = apply(&mut s, &campaign(1_000, "A"));
        let out = apply(&mut s, &campaign(2_000, "B"));
        assert_eq!(
            brief(&out),
            [
                ("A".into(), 1, 1_000, Some(2_000), false, false),
                ("B".into(), 2, 2_000, None, true, false),
            ]
        );
        assert!(out.iter().all(|d| d.revision == 2));
        // A→B→A gives three versions.
        let out = apply(&mut s, &campaign(3_000, "A"));
        assert_eq!(
            brief(&out),
            [
                ("B".into(), 2, 2_000, Some(3_000), false, false),
                ("A".into(), 3, 3_000, None, true, false),
            ]
        );
        assert_eq!(s.versions().len(), 3);
    }

    #[test]
    fn late_snapshot_splits_a_version_and_retracts_what_it_replaces() {
        let mut s = state();
        let _ = apply(&mut s, &campaign(1_000, "A"));
        let _ = apply(&mut s, &campaign(2_000, "A"));
        let _ = apply(&mut s, &campaign(3_000, "B"));
        // A late B at 1 500 moves B's start from 3 000 to 1 500: the version starting at 3 000
        // disappears, and the A at 2 000 now opens a version of its own.
        let out = apply(&mut s, &campaign(1_500, "B"));
        let sk_b3000 = surrogate_key::<Campaign>(
            s.key(),
            3_000,
            attributes_hash::<Campaign>(&Campaign::attributes(&campaign(3_000, "B"))),
        );
        // B@3000 still opens a version (after A@2000), renumbered; A@1000 is cut at 1 500;
        // B@1500 and A@2000 are new versions.
        assert_eq!(
            brief(&out),
            [
                ("A".into(), 1, 1_000, Some(1_500), false, false),
                ("B".into(), 2, 1_500, Some(2_000), false, false),
                ("A".into(), 3, 2_000, Some(3_000), false, false),
                ("B".into(), 4, 3_000, None, true, false),
            ]
        );
        assert_eq!(out[3].surrogate_key, sk_b3000, "B@3000 keeps its key");

        // A late B at 2 500 joins B@3000's run and moves its start to 2 500: the version keyed
        // by B@3000 no longer exists and is retracted.
        let out = apply(&mut s, &campaign(2_500, "B"));
        assert_eq!(
            brief(&out),
            [
                ("B".into(), 4, 3_000, None, false, true),
                ("A".into(), 3, 2_000, Some(2_500), false, false),
                ("B".into(), 4, 2_500, None, true, false),
            ]
        );
        assert_eq!(out[0].surrogate_key, sk_b3000);
        assert!(out.iter().all(|d| d.revision == s.revision()));
    }

    #[test]
    fn tie_at_equal_time_is_resolved_by_hash_regardless_of_arrival_order() {
        let a = campaign(1_000, "A");
        let b = campaign(1_000, "B");
        let ha = attributes_hash::<Campaign>(&Campaign::attributes(&a));
        let hb = attributes_hash::<Campaign>(&Campaign::attributes(&b));
        let (first, second) = if ha < hb { ("A", "B") } else { ("B", "A") };

        let mut ab = state();
        let _ = apply(&mut ab, &a);
        let _ = apply(&mut ab, &b);
        let mut ba = state();
        let _ = apply(&mut ba, &b);
        let _ = apply(&mut ba, &a);
        assert_eq!(ab.versions(), ba.versions());
        let v = ab.versions();
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].valid_from, v[0].valid_to, v[1].valid_from),
            (ts(1_000), Some(ts(1_000)), ts(1_000))
        );
        assert_eq!(ab.dims()[0].name, first);
        assert_eq!(ab.dims()[1].name, second);
        assert_ne!(
            v[0].surrogate_key, v[1].surrogate_key,
            "same instant, distinct keys"
        );
    }

    #[test]
    fn earliest_extraction_of_an_observation_provides_the_envelope() {
        let mut late_seen = campaign(1_000, "A");
        late_seen.changed_at = Some(ts(500));
        late_seen.extracted_at = ts(9_000);
        late_seen.run_id = "run-9".into();
        let mut first_seen = late_seen.clone();
        first_seen.extracted_at = ts(1_000);
        first_seen.run_id = "run-1".into();

        let mut s = state();
        let out = apply(&mut s, &late_seen);
        assert_eq!(
            (out[0].run_id.as_str(), out[0].valid_from),
            ("run-9", ts(500))
        );
        // The earlier extraction arrives late: same observation, better lineage → re-emitted.
        let out = apply(&mut s, &first_seen);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].run_id.as_str(), out[0].extracted_at),
            ("run-1", ts(1_000))
        );
        assert_eq!(out[0].revision, 2);
        // And the later one again changes nothing.
        assert_eq!(s.apply(&late_seen).unwrap(), Applied::unchanged());
    }

    #[test]
    fn wrong_entity_is_refused() {
        let mut s = state();
        let mut other = campaign(1_000, "A");
        other.tenant_id = "globex".into();
        let err = s.apply(&other).unwrap_err();
        assert_eq!(err.code(), "key_mismatch");
        assert_eq!(s, state());
    }

    #[test]
    fn none_and_empty_string_hash_differently_and_fields_do_not_bleed() {
        let h = |c: &RawCampaign| attributes_hash::<Campaign>(&Campaign::attributes(c));
        let base = campaign(0, "A");
        let mut empty = base.clone();
        empty.bidding_strategy = Some(String::new());
        assert_ne!(h(&base), h(&empty));
        let mut x = base.clone();
        x.name = "ab".into();
        x.status = "c".into();
        let mut y = base.clone();
        y.name = "a".into();
        y.status = "bc".into();
        assert_ne!(h(&x), h(&y));
        // Envelope fields are not tracked.
        let mut other_run = base.clone();
        other_run.run_id = "other".into();
        other_run.extracted_at = ts(99);
        assert_eq!(h(&base), h(&other_run));
    }

    /// Golden values: the hashes are part of the data (they are stored in ClickHouse and in the
    /// changelog), so they must never change silently — with a new Rust, xxhash or serde.
    #[test]
    fn hashes_are_stable() {
        let c = campaign(0, "Brand");
        let h = attributes_hash::<Campaign>(&Campaign::attributes(&c));
        let key = CampaignState::key_of(&c);
        assert_eq!(hash_hex(h), "f9c515d4241a612d");
        assert_eq!(
            surrogate_key::<Campaign>(&key, 1_764_000_000_123, h),
            "a18e3af88136ac3bc14b81d0f3c21059"
        );
    }

    #[test]
    fn ad_groups_and_ads_map_their_fields() {
        let g = RawAdGroup {
            tenant_id: "acme".into(),
            platform: Platform::MetaAds,
            account_id: "act_1".into(),
            extracted_at: ts(5_000),
            run_id: "r".into(),
            ad_group_id: "21".into(),
            campaign_id: "11".into(),
            name: "Set".into(),
            status: "ACTIVE".into(),
            ad_group_type: None,
            bid_micros: Some(7),
            budget_micros: None,
            changed_at: Some(ts(4_000)),
        };
        let mut gs = AdGroupState::for_snapshot(&g);
        let out = gs.apply(&g).unwrap().emit;
        assert_eq!(out.len(), 1);
        let d = &out[0];
        assert_eq!(
            (d.ad_group_id.as_str(), d.campaign_id.as_str(), d.bid_micros),
            ("21", "11", Some(7))
        );
        assert_eq!((d.valid_from, d.extracted_at), (ts(4_000), ts(5_000)));
        let mut moved = g.clone();
        moved.campaign_id = "12".into();
        moved.changed_at = Some(ts(4_500));
        assert_eq!(
            gs.apply(&moved).unwrap().emit.len(),
            2,
            "campaign_id is tracked"
        );

        let a = RawAd {
            tenant_id: "acme".into(),
            platform: Platform::GoogleAds,
            account_id: "1".into(),
            extracted_at: ts(1_000),
            run_id: "r".into(),
            ad_id: "31".into(),
            ad_group_id: "21".into(),
            campaign_id: "11".into(),
            name: "Ad".into(),
            status: "ENABLED".into(),
            ad_type: None,
            headline: Some("Hi".into()),
            final_url: None,
            changed_at: None,
        };
        let mut s = AdState::for_snapshot(&a);
        let d = s.apply(&a).unwrap().emit;
        assert_eq!(
            (
                d[0].ad_id.as_str(),
                d[0].ad_group_id.as_str(),
                d[0].headline.as_deref()
            ),
            ("31", "21", Some("Hi"))
        );
        let mut h = a.clone();
        h.extracted_at = ts(2_000);
        h.final_url = Some("https://x".into());
        assert_eq!(s.apply(&h).unwrap().emit.len(), 2, "final_url is tracked");
        // Same id, different kind: different surrogate keys.
        let key = AdState::key_of(&a);
        assert_ne!(
            surrogate_key::<Ad>(&key, 0, 0),
            surrogate_key::<AdGroup>(&key, 0, 0)
        );
    }

    #[test]
    fn serde_round_trip_and_corruption_is_detected() {
        let mut s = state();
        for (t, n) in [(1_000, "A"), (2_000, "A"), (3_000, "B"), (4_000, "A")] {
            let _ = apply(&mut s, &campaign(t, n));
        }
        let json = serde_json::to_string(&s).unwrap();
        let back: CampaignState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let tampered = json.replace("\"A\"", "\"Z\"");
        let err = serde_json::from_str::<CampaignState>(&tampered).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn folding_keeps_history_and_refuses_only_what_it_cannot_place() {
        let mut s = state();
        for (t, n) in [
            (1_000, "A"),
            (2_000, "A"),
            (3_000, "A"),
            (4_000, "B"),
            (5_000, "B"),
            (6_000, "B"),
        ] {
            let _ = apply(&mut s, &campaign(t, n));
        }
        let before = s.versions();
        assert_eq!(s.fold_before(ts(5_500)), 3, "A@2000, A@3000, B@5000");
        assert_eq!(s.versions(), before);
        assert_eq!(s.observations(), 3);
        // Inside a folded run with the same attributes: a no-op, as without folding.
        assert_eq!(
            s.apply(&campaign(2_500, "A")).unwrap(),
            Applied::unchanged()
        );
        // Would cut A's run at 2 500 and end it at the (folded) next observation: refused.
        let err = s.apply(&campaign(2_500, "B")).unwrap_err();
        assert_eq!(err.code(), "before_horizon");
        // Before everything: still exact (the next observation is the first one, never folded).
        let out = apply(&mut s, &campaign(500, "C"));
        assert_eq!(out.len(), 3, "C opens v1, A and B are renumbered");
        // After the horizon: as usual, exactly as if B@5000 were still there.
        let out = apply(&mut s, &campaign(5_800, "A"));
        assert_eq!(
            brief(&out),
            [
                ("B".into(), 3, 4_000, Some(5_800), false, false),
                ("A".into(), 4, 5_800, Some(6_000), false, false),
                ("B".into(), 5, 6_000, None, true, false),
            ]
        );
        // The horizon never moves back.
        assert_eq!(s.fold_before(ts(0)), 0);
        assert_eq!(s.fold_older_than(TimeDelta::days(1)), 0);
    }
}
