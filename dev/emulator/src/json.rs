//! A minimal append-only JSON writer for the hot paths.
//!
//! Building a `serde_json::Value` per row costs several allocations per field; the large
//! responses (searchStream batches, insights pages, GA4 reports) are instead written straight
//! into a byte buffer with these helpers, which produce exactly the same text serde_json would.

use std::io::Write;

/// Appends `s` as a JSON string literal.
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match esc {
            Some(e) => out.extend_from_slice(e),
            None => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `"key":`.
pub fn key(out: &mut Vec<u8>, k: &str) {
    string(out, k);
    out.push(b':');
}

/// Appends an unsigned integer as a bare number.
pub fn uint(out: &mut Vec<u8>, v: u64) {
    let _ = write!(out, "{v}");
}

/// Appends an integer as a quoted string (proto3 JSON renders int64 this way; Meta and GA4
/// render all numbers this way).
pub fn uint_str(out: &mut Vec<u8>, v: u64) {
    let _ = write!(out, "\"{v}\"");
}

/// Appends a double the way serde_json does (shortest round-trip form, `3.0` for whole
/// numbers); non-finite values become `0`.
pub fn double(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.push(b'0');
    }
}

/// Appends any serde_json value.
pub fn value(out: &mut Vec<u8>, v: &serde_json::Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Cents as a decimal with trailing zeros trimmed, as Meta and GA4 print money:
/// 1234 → "12.34", 1230 → "12.3", 1200 → "12", 5 → "0.05".
pub fn trimmed_money(cents: u64) -> String {
    let units = cents / 100;
    let frac = cents % 100;
    if frac == 0 {
        format!("{units}")
    } else if frac.is_multiple_of(10) {
        format!("{units}.{}", frac / 10)
    } else {
        format!("{units}.{frac:02}")
    }
}

/// Cents as a double in currency units (Google `conversions_value`): exact for two decimals.
pub fn cents_to_f64(cents: u64) -> f64 {
    cents as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_serde() {
        for s in [
            "plain",
            "quote \" and \\ back",
            "tab\tnew\nline",
            "ctrl \u{1}",
            "ünïcödé | €",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            let expected = serde_json::to_string(s).unwrap_or_default();
            assert_eq!(String::from_utf8_lossy(&out), expected);
        }
    }

    #[test]
    fn money_formats() {
        assert_eq!(trimmed_money(1234), "12.34");
        assert_eq!(trimmed_money(1230), "12.3");
        assert_eq!(trimmed_money(1200), "12");
        assert_eq!(trimmed_money(5), "0.05");
        assert_eq!(trimmed_money(0), "0");
        let mut out = Vec::new();
        double(&mut out, 3.0);
        assert_eq!(out, b"3.0");
        assert_eq!(cents_to_f64(12_345).to_string(), "123.45");
    }
}
