//! Avro `date` (days since 1970-01-01) ⇄ [`chrono::NaiveDate`], for `#[serde(with = …)]`.
//!
//! Dates are the ad account's local dates, as the platforms report them: no time zone attached.

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serializer};

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid epoch");

pub fn to_days(date: NaiveDate) -> i32 {
    // Dates of marketing data are within ±5.8 million years of the epoch.
    (date - EPOCH).num_days() as i32
}

pub fn from_days(days: i32) -> Option<NaiveDate> {
    EPOCH.checked_add_signed(chrono::Duration::days(days.into()))
}

pub fn serialize<S: Serializer>(date: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i32(to_days(*date))
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
    let days = i32::deserialize(d)?;
    from_days(days)
        .ok_or_else(|| serde::de::Error::custom(format!("date out of range: {days} days")))
}

/// The same for `Option<NaiveDate>` (Avro `["null", date]`).
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(date: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
        match date {
            Some(d) => s.serialize_some(&to_days(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        match Option::<i32>::deserialize(d)? {
            Some(days) => from_days(days)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("date out of range: {days} days"))),
            None => Ok(None),
        }
    }
}
