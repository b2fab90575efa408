//! Reading fields out of platform JSON with errors that name the field.
//!
//! Platforms encode numbers differently (Google's proto3 JSON sends int64 as strings and omits
//! zero values; Meta sends decimal strings; GA4 sends every metric as a string), so every
//! accessor accepts the documented forms and rejects anything else with [`ExtractError::Malformed`].

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::Value;

use crate::error::{ExtractError, Where};

/// Follows a dotted path of object keys.
pub fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

pub fn string(value: &Value, path: &str, w: &Where) -> Result<String, ExtractError> {
    match at(value, path) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(other) => Err(ExtractError::malformed(
            w,
            path,
            format!("expected a string, got {other}"),
        )),
        None => Err(ExtractError::malformed(w, path, "missing")),
    }
}

pub fn opt_string(value: &Value, path: &str, w: &Where) -> Result<Option<String>, ExtractError> {
    match at(value, path) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => string(value, path, w).map(Some),
    }
}

/// An integer sent as a JSON number or a decimal string; `None` when absent.
pub fn opt_i64(value: &Value, path: &str, w: &Where) -> Result<Option<i64>, ExtractError> {
    match at(value, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            ExtractError::malformed(w, path, format!("expected an integer, got {n}"))
        }),
        Some(Value::String(s)) => s.parse::<i64>().map(Some).map_err(|_| {
            ExtractError::malformed(w, path, format!("expected an integer, got {s:?}"))
        }),
        Some(other) => Err(ExtractError::malformed(
            w,
            path,
            format!("expected an integer, got {other}"),
        )),
    }
}

/// A count that proto3 JSON omits when zero; never negative.
pub fn count(value: &Value, path: &str, w: &Where) -> Result<i64, ExtractError> {
    let n = opt_i64(value, path, w)?.unwrap_or(0);
    if n < 0 {
        return Err(ExtractError::malformed(
            w,
            path,
            format!("negative count {n}"),
        ));
    }
    Ok(n)
}

/// A floating-point metric (number or numeric string), zero when absent; finite, never negative.
pub fn amount(value: &Value, path: &str, w: &Where) -> Result<f64, ExtractError> {
    let v = match at(value, path) {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => s.parse::<f64>().unwrap_or(f64::NAN),
        Some(other) => {
            return Err(ExtractError::malformed(
                w,
                path,
                format!("expected a number, got {other}"),
            ));
        }
    };
    if !v.is_finite() || v < 0.0 {
        return Err(ExtractError::malformed(
            w,
            path,
            format!("expected a non-negative number, got {:?}", at(value, path)),
        ));
    }
    Ok(v)
}

/// Currency units to integer micros, exactly: decimal strings ("12.34") are parsed as decimals,
/// JSON doubles (Google's `conversionsValue`) through their shortest decimal representation.
pub fn micros(value: &Value, path: &str, w: &Where) -> Result<i64, ExtractError> {
    let text = match at(value, path) {
        None | Some(Value::Null) => return Ok(0),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ExtractError::malformed(
                w,
                path,
                format!("expected an amount, got {other}"),
            ));
        }
    };
    decimal_to_micros(&text).ok_or_else(|| {
        ExtractError::malformed(
            w,
            path,
            format!("expected a non-negative amount, got {text:?}"),
        )
    })
}

pub fn decimal_to_micros(text: &str) -> Option<i64> {
    let d = Decimal::from_str_exact(text.trim())
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .ok()?;
    if d.is_sign_negative() {
        return None;
    }
    let m = (d * Decimal::from(1_000_000)).round();
    i64::try_from(m).ok()
}

/// A date in `YYYY-MM-DD` (Google, Meta) or `YYYYMMDD` (GA4).
pub fn date(value: &Value, path: &str, w: &Where) -> Result<NaiveDate, ExtractError> {
    let s = string(value, path, w)?;
    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(&s, "%Y%m%d"))
        .map_err(|_| ExtractError::malformed(w, path, format!("expected a date, got {s:?}")))
}

pub fn opt_date(value: &Value, path: &str, w: &Where) -> Result<Option<NaiveDate>, ExtractError> {
    match at(value, path) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(_) => date(value, path, w).map(Some),
    }
}

/// Parses a response body as JSON, or says it is not.
pub fn parse_body(body: &[u8], w: &Where) -> Result<Value, ExtractError> {
    serde_json::from_slice(body)
        .map_err(|e| ExtractError::malformed(w, "(body)", format!("not valid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mi_common::Platform;
    use serde_json::json;

    fn w() -> Where {
        Where::new(Platform::MetaAds, "act_1", "insights")
    }

    #[test]
    fn money_becomes_exact_micros() {
        assert_eq!(decimal_to_micros("12.34"), Some(12_340_000));
        assert_eq!(decimal_to_micros("0.1"), Some(100_000));
        assert_eq!(decimal_to_micros("123.45"), Some(123_450_000));
        assert_eq!(decimal_to_micros("-1"), None);
        assert_eq!(decimal_to_micros("abc"), None);
        let v = json!({"conversionsValue": 0.29, "spend": "1.10"});
        assert_eq!(micros(&v, "conversionsValue", &w()).ok(), Some(290_000));
        assert_eq!(micros(&v, "spend", &w()).ok(), Some(1_100_000));
    }

    #[test]
    fn errors_name_the_field_and_platform() {
        let v = json!({"metrics": {"clicks": "x1", "impressions": "-4"}});
        let e = count(&v, "metrics.clicks", &w()).unwrap_err().to_string();
        assert_eq!(
            e,
            "meta_ads account act_1 endpoint insights: malformed response: field metrics.clicks: expected an integer, got \"x1\""
        );
        assert!(
            count(&v, "metrics.impressions", &w())
                .unwrap_err()
                .to_string()
                .contains("negative count")
        );
        assert_eq!(
            count(&v, "metrics.videoViews", &w()).ok(),
            Some(0),
            "proto3 omits zeros"
        );
        assert!(
            string(&v, "campaign.id", &w())
                .unwrap_err()
                .to_string()
                .contains("field campaign.id: missing")
        );
    }

    #[test]
    fn dates_in_both_platform_forms() {
        let v = json!({"a": "2026-11-27", "b": "20261127", "c": "27/11/2026"});
        let d = NaiveDate::from_ymd_opt(2026, 11, 27);
        assert_eq!(date(&v, "a", &w()).ok(), d);
        assert_eq!(date(&v, "b", &w()).ok(), d);
        assert!(date(&v, "c", &w()).is_err());
    }
}
