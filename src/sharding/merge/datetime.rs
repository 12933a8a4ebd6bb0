//! Date and time text in DateStyle ISO turned into numbers that order as Postgres orders the
//! values. Text does not compare as strings: years past 9999, BC dates and UTC offsets (a
//! daylight-saving change makes local time run backwards) all break string order.
//!
//! Other DateStyles are refused rather than guessed.

use super::error::MergeError;

const MICROS_PER_DAY: i128 = 86_400_000_000;

/// `date` text (`2024-01-05`, `0044-03-15 BC`, `infinity`): days from 1970-01-01.
pub(super) fn date(text: &[u8]) -> Result<i128, MergeError> {
    let s = ascii(text)?;
    if let Some(inf) = infinity(s) {
        return Ok(inf);
    }
    let (s, bc) = strip_bc(s);
    days(s, bc)
}

/// `timestamp` text (`2024-01-05 10:20:30.5`, optional ` BC`): microseconds from 1970.
pub(super) fn timestamp(text: &[u8]) -> Result<i128, MergeError> {
    let s = ascii(text)?;
    if let Some(inf) = infinity(s) {
        return Ok(inf);
    }
    let (s, bc) = strip_bc(s);
    let (day, clock) = s.split_once(' ').ok_or(MergeError::DateStyle)?;
    Ok(days(day, bc)? * MICROS_PER_DAY + time_of_day(clock)?)
}

/// `timestamptz` text (`2024-01-05 10:20:30.5+05:30`, optional ` BC`): microseconds from 1970 UTC.
pub(super) fn timestamptz(text: &[u8]) -> Result<i128, MergeError> {
    let s = ascii(text)?;
    if let Some(inf) = infinity(s) {
        return Ok(inf);
    }
    let (s, bc) = strip_bc(s);
    let (day, clock) = s.split_once(' ').ok_or(MergeError::DateStyle)?;
    let at = clock.find(['+', '-']).ok_or(MergeError::DateStyle)?;
    let (clock, offset) = clock.split_at(at);
    let local = days(day, bc)? * MICROS_PER_DAY + time_of_day(clock)?;
    Ok(local - utc_offset(offset)?)
}

/// `time` text (`10:20:30.25`): microseconds from midnight.
pub(super) fn time(text: &[u8]) -> Result<i128, MergeError> {
    time_of_day(ascii(text)?)
}

fn ascii(text: &[u8]) -> Result<&str, MergeError> {
    std::str::from_utf8(text).map_err(|_| MergeError::DateStyle)
}

fn infinity(s: &str) -> Option<i128> {
    match s {
        "infinity" => Some(i128::MAX),
        "-infinity" => Some(i128::MIN),
        _ => None,
    }
}

fn strip_bc(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

fn number(s: &str) -> Result<i128, MergeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MergeError::DateStyle);
    }
    s.parse().map_err(|_| MergeError::DateStyle)
}

/// `YYYY-MM-DD` (the year may be longer) to days from 1970-01-01 in the proleptic Gregorian
/// calendar Postgres uses; year 1 BC is year 0.
fn days(s: &str, bc: bool) -> Result<i128, MergeError> {
    let mut parts = s.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MergeError::DateStyle);
    };
    // Postgres years have at most 6 digits; more could overflow the arithmetic below.
    if y.len() > 9 {
        return Err(MergeError::DateStyle);
    }
    let (year, month, day) = (number(y)?, number(m)?, number(d)?);
    if m.len() != 2 || d.len() != 2 || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(MergeError::DateStyle);
    }
    let year = if bc { 1 - year } else { year };
    Ok(days_from_civil(year, month, day))
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i128, month: i128, day: i128) -> i128 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `HH:MM:SS[.ffffff]` to microseconds.
fn time_of_day(s: &str) -> Result<i128, MergeError> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = hms.split(':');
    let (Some(h), Some(m), Some(sec), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MergeError::DateStyle);
    };
    if h.len() != 2 || m.len() != 2 || sec.len() != 2 || frac.len() > 6 {
        return Err(MergeError::DateStyle);
    }
    let micros = match frac.is_empty() {
        true => 0,
        false => number(frac)? * 10i128.pow(6 - frac.len() as u32),
    };
    Ok(((number(h)? * 60 + number(m)?) * 60 + number(sec)?) * 1_000_000 + micros)
}

/// `+HH`, `-HH:MM` or `+HH:MM:SS` to microseconds east of UTC.
fn utc_offset(s: &str) -> Result<i128, MergeError> {
    let (negative, rest) = match s.split_at(1) {
        ("-", rest) => (true, rest),
        ("+", rest) => (false, rest),
        _ => return Err(MergeError::DateStyle),
    };
    let mut seconds = 0;
    let mut count = 0;
    for part in rest.split(':') {
        if part.len() != 2 || count == 3 {
            return Err(MergeError::DateStyle);
        }
        seconds = seconds * 60 + number(part)?;
        count += 1;
    }
    seconds *= 60i128.pow(3 - count);
    let micros = seconds * 1_000_000;
    Ok(if negative { -micros } else { micros })
}
