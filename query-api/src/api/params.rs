//! Query-string parsing shared by the handlers: one error shape, dates and lists read one way.

use chrono::NaiveDate;

use crate::error::{ApiError, ApiResult};
use crate::query::truncate;

pub fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_parameter", message)
}

/// A `YYYY-MM-DD` parameter.
pub fn date(key: &str, value: &str) -> ApiResult<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        bad(format!(
            "{key}: {:?} is not a date (YYYY-MM-DD)",
            truncate(value)
        ))
    })
}

/// The `key=value` pairs of a query string, `key[]` read as `key`.
pub fn pairs(raw: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.trim_end_matches("[]").to_owned(), v.into_owned()))
}

/// A list parameter: repeated keys and comma-separated values both add items.
pub fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}
