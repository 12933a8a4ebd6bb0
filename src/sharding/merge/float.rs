//! `real` and `double precision` as Postgres reads, orders and prints them: shortest round-trip
//! digits (extra_float_digits >= 1, the default), exponent notation outside [1e-4, 1e15) (1e6 for
//! `real`), `NaN` above every other value and equal to itself, `-0` equal to `0`.

use std::cmp::Ordering;

use super::error::MergeError;

/// Parses `float4out`/`float8out` text.
pub(super) fn parse(text: &[u8]) -> Result<f64, MergeError> {
    let bad = || MergeError::Malformed("float value");
    let s = std::str::from_utf8(text).map_err(|_| bad())?;
    match s {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| bad()),
    }
}

/// Postgres' float order (`float8_cmp_internal`).
pub(super) fn cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// The bits two equal floats share: `-0` is `0`, every NaN is one NaN (GROUP BY keys).
pub(super) fn canonical_bits(v: f64) -> u64 {
    match v {
        _ if v.is_nan() => f64::NAN.to_bits(),
        _ if v == 0.0 => 0,
        _ => v.to_bits(),
    }
}

/// `float8out` with extra_float_digits >= 1.
pub(super) fn format_f64(v: f64) -> String {
    format_shortest(format!("{v:e}"), v.is_nan(), v.is_infinite(), 15)
}

/// `float4out` with extra_float_digits >= 1.
pub(super) fn format_f32(v: f32) -> String {
    format_shortest(format!("{v:e}"), v.is_nan(), v.is_infinite(), 6)
}

/// Rewrites Rust's shortest round-trip `{:e}` form (`-1.5e-7`) the way Postgres' `d2s`/`f2s`
/// print it: fixed notation for decimal exponents in [-4, `max_fixed`), else `-1.5e-07`.
fn format_shortest(sci: String, nan: bool, infinite: bool, max_fixed: i32) -> String {
    if nan {
        return "NaN".into();
    }
    if infinite {
        return match sci.starts_with('-') {
            true => "-Infinity".into(),
            false => "Infinity".into(),
        };
    }
    let (sign, rest) = match sci.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", sci.as_str()),
    };
    let (mantissa, exp) = rest.split_once('e').unwrap_or((rest, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if exp < -4 || exp >= max_fixed {
        let (first, more) = digits.split_at(1);
        let point = if more.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{point}{more}e{exp_sign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        let zeros = "0".repeat(int_len - digits.len());
        return format!("{sign}{digits}{zeros}");
    }
    let (int, frac) = digits.split_at(int_len);
    format!("{sign}{int}.{frac}")
}
