//! Postgres `numeric` as exact decimals: parsed from text or binary, added, compared, divided for
//! `avg` with Postgres' own result scale, and printed byte for byte as Postgres prints them.
//!
//! A finite value is `value / 10^scale`, `scale` being Postgres' display scale (dscale): `1.50`
//! has scale 2, and sums keep the larger scale of their inputs as Postgres' `add_var` does.

use std::cmp::Ordering;

use bytes::{BufMut, BytesMut};
use num_bigint::{BigInt, Sign};
use num_integer::Integer;
use num_traits::{Signed, Zero};

use super::error::MergeError;

/// Postgres' binary sign words.
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// What `numeric_send` puts in the dscale word of infinities (header bits read as a scale).
const INF_DSCALE: u16 = 0x0020;
/// `select_div_scale`'s constants (numeric.c).
const MIN_SIG_DIGITS: i64 = 16;
const MAX_DISPLAY_SCALE: i64 = 1000;
/// The largest dscale a numeric can carry.
const MAX_DSCALE: u32 = 0x3FFF;

/// A `numeric` value. `NaN` sorts above everything and equals itself, as in Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite { value: BigInt, scale: u32 },
}

impl Numeric {
    pub(super) fn from_i64(v: i64) -> Numeric {
        Numeric::Finite {
            value: BigInt::from(v),
            scale: 0,
        }
    }

    /// Parses `numeric_out` text: `-12.340`, `NaN`, `Infinity`, `-Infinity`.
    pub(super) fn parse_text(text: &[u8]) -> Result<Numeric, MergeError> {
        let bad = MergeError::Malformed("numeric value");
        match text {
            b"NaN" => return Ok(Numeric::NaN),
            b"Infinity" => return Ok(Numeric::PosInf),
            b"-Infinity" => return Ok(Numeric::NegInf),
            _ => {}
        }
        let (negative, rest) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            Some((b'+', rest)) => (false, rest),
            _ => (false, text),
        };
        let (int, frac) = match rest.iter().position(|&b| b == b'.') {
            Some(dot) => (&rest[..dot], &rest[dot + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let all_digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return Err(bad);
        }
        let scale = u32::try_from(frac.len()).map_err(|_| bad.clone())?;
        let mut digits = Vec::with_capacity(int.len() + frac.len());
        digits.extend_from_slice(int);
        digits.extend_from_slice(frac);
        let magnitude = BigInt::parse_bytes(&digits, 10).ok_or(bad)?;
        let value = if negative { -magnitude } else { magnitude };
        Ok(Numeric::Finite { value, scale })
    }

    /// Parses `numeric_send` bytes: ndigits, weight, sign, dscale, then base-10000 digits.
    pub(super) fn decode_binary(bytes: &[u8]) -> Result<Numeric, MergeError> {
        let bad = || MergeError::Malformed("binary numeric value");
        let word = |i: usize| -> Result<u16, MergeError> {
            let b = bytes.get(2 * i..2 * i + 2).ok_or_else(bad)?;
            Ok(u16::from_be_bytes([b[0], b[1]]))
        };
        let ndigits = usize::from(word(0)?);
        let weight = i64::from(word(1)? as i16);
        let sign = word(2)?;
        let dscale = u32::from(word(3)?);
        if bytes.len() != 8 + 2 * ndigits || dscale > MAX_DSCALE {
            return Err(bad());
        }
        match sign {
            SIGN_NAN => return Ok(Numeric::NaN),
            SIGN_PINF => return Ok(Numeric::PosInf),
            SIGN_NINF => return Ok(Numeric::NegInf),
            SIGN_POS | SIGN_NEG => {}
            _ => return Err(bad()),
        }
        let mut n = BigInt::zero();
        for i in 0..ndigits {
            let d = word(4 + i)?;
            if d >= 10_000 {
                return Err(bad());
            }
            n = n * 10_000u32 + d;
        }
        // The last digit is worth 10000^(weight - ndigits + 1).
        let exponent = 4 * (weight - ndigits as i64 + 1) + i64::from(dscale);
        let (magnitude, scale) = if exponent >= 0 {
            (n * pow10(exponent as u32), dscale)
        } else {
            let divisor = pow10(exponent.unsigned_abs() as u32);
            let (q, r) = n.div_rem(&divisor);
            match r.is_zero() {
                true => (q, dscale),
                // Digits beyond dscale: keep them rather than round.
                false => (n, dscale + exponent.unsigned_abs() as u32),
            }
        };
        let value = if sign == SIGN_NEG {
            -magnitude
        } else {
            magnitude
        };
        Ok(Numeric::Finite { value, scale })
    }

    /// `numeric_out`: the digits with exactly `scale` of them after the point.
    pub(super) fn to_text(&self) -> String {
        let (value, scale) = match self {
            Numeric::NaN => return "NaN".into(),
            Numeric::PosInf => return "Infinity".into(),
            Numeric::NegInf => return "-Infinity".into(),
            Numeric::Finite { value, scale } => (value, *scale as usize),
        };
        let (int, frac) = split_digits(value, scale);
        let mut out = String::with_capacity(int.len() + frac.len() + 2);
        if value.is_negative() {
            out.push('-');
        }
        out.push_str(&int);
        if scale > 0 {
            out.push('.');
            out.push_str(&frac);
        }
        out
    }

    /// `numeric_send`: the same bytes Postgres sends for this value.
    pub(super) fn to_binary(&self) -> Vec<u8> {
        let special = |sign: u16, dscale: u16| [0, 0, sign, dscale];
        let (header, digits) = match self {
            Numeric::NaN => (special(SIGN_NAN, 0), Vec::new()),
            Numeric::PosInf => (special(SIGN_PINF, INF_DSCALE), Vec::new()),
            Numeric::NegInf => (special(SIGN_NINF, INF_DSCALE), Vec::new()),
            Numeric::Finite { value, scale } => {
                let (digits, weight) = nbase_digits(value, *scale);
                let sign = match value.sign() {
                    Sign::Minus => SIGN_NEG,
                    _ => SIGN_POS,
                };
                let header = [
                    digits.len() as u16,
                    weight as i16 as u16,
                    sign,
                    *scale as u16,
                ];
                (header, digits)
            }
        };
        let mut out = BytesMut::with_capacity(8 + 2 * digits.len());
        for word in header.iter().chain(&digits) {
            out.put_u16(*word);
        }
        out.to_vec()
    }

    /// Postgres' `+` (and `sum`): NaN wins; +Infinity plus -Infinity is NaN; the larger scale stays.
    pub(super) fn add(&self, other: &Numeric) -> Numeric {
        use Numeric::*;
        match (self, other) {
            (NaN, _) | (_, NaN) | (PosInf, NegInf) | (NegInf, PosInf) => NaN,
            (PosInf, _) | (_, PosInf) => PosInf,
            (NegInf, _) | (_, NegInf) => NegInf,
            (
                Finite {
                    value: a,
                    scale: sa,
                },
                Finite {
                    value: b,
                    scale: sb,
                },
            ) => {
                let scale = (*sa).max(*sb);
                Finite {
                    value: rescale(a, *sa, scale) + rescale(b, *sb, scale),
                    scale,
                }
            }
        }
    }

    /// `avg`'s final step, `numeric_div(sum, count)`: the quotient rounded half away from zero to
    /// `select_div_scale`'s scale. `None` (SQL NULL) when nothing was counted.
    pub(super) fn avg(sum: &Numeric, count: i64) -> Option<Numeric> {
        if count <= 0 {
            return None;
        }
        let (value, scale) = match sum {
            Numeric::Finite { value, scale } => (value, *scale),
            special => return Some(special.clone()),
        };
        let count_big = BigInt::from(count);
        let rscale = select_div_scale((value, scale), (&count_big, 0));
        // value / 10^scale / count at scale rscale is value * 10^rscale / (count * 10^scale).
        let numerator = value * pow10(rscale);
        let denominator = count_big * pow10(scale);
        let (q, r) = numerator.div_rem(&denominator);
        // Half away from zero: |2r| >= denominator bumps the magnitude.
        let q = match (r.abs() * 2u32) >= denominator {
            true if numerator.is_negative() => q - 1u32,
            true => q + 1u32,
            false => q,
        };
        Some(Numeric::Finite {
            value: q,
            scale: rscale,
        })
    }

    /// The same value with no trailing fractional zeros: `1.0` and `1.00` are one GROUP BY key.
    pub(super) fn normalized(&self) -> Numeric {
        let Numeric::Finite { value, scale } = self else {
            return self.clone();
        };
        let (mut value, mut scale) = (value.clone(), *scale);
        let ten = BigInt::from(10u32);
        while scale > 0 {
            let (q, r) = value.div_rem(&ten);
            if !r.is_zero() {
                break;
            }
            value = q;
            scale -= 1;
        }
        Numeric::Finite { value, scale }
    }
}

impl Ord for Numeric {
    /// Postgres' order: -Infinity < finite values < +Infinity < NaN; `1.0` equals `1.00`.
    fn cmp(&self, other: &Numeric) -> Ordering {
        use Numeric::*;
        let rank = |n: &Numeric| match n {
            NegInf => 0,
            Finite { .. } => 1,
            PosInf => 2,
            NaN => 3,
        };
        match (self, other) {
            (
                Finite {
                    value: a,
                    scale: sa,
                },
                Finite {
                    value: b,
                    scale: sb,
                },
            ) => {
                let scale = (*sa).max(*sb);
                rescale(a, *sa, scale).cmp(&rescale(b, *sb, scale))
            }
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Numeric) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn pow10(exp: u32) -> BigInt {
    num_traits::pow(BigInt::from(10u32), exp as usize)
}

/// `value / 10^from` as an unscaled integer at scale `to` (`to >= from`).
fn rescale(value: &BigInt, from: u32, to: u32) -> BigInt {
    match to > from {
        true => value * pow10(to - from),
        false => value.clone(),
    }
}

/// The decimal digits of |value| / 10^scale before and after the point (at least one before).
fn split_digits(value: &BigInt, scale: usize) -> (String, String) {
    let mut digits = value.magnitude().to_str_radix(10);
    if digits.len() <= scale {
        digits.insert_str(0, &"0".repeat(scale + 1 - digits.len()));
    }
    let frac = digits.split_off(digits.len() - scale);
    (digits, frac)
}

/// The base-10000 digits of |value| / 10^scale without leading or trailing zero digits, and the
/// weight of the first (Postgres' `NumericVar` after `strip_var`). Zero has no digits, weight 0.
fn nbase_digits(value: &BigInt, scale: u32) -> (Vec<u16>, i32) {
    let (mut int, mut frac) = split_digits(value, scale as usize);
    let int_pad = (4 - int.len() % 4) % 4;
    int.insert_str(0, &"0".repeat(int_pad));
    frac.push_str(&"0".repeat((4 - frac.len() % 4) % 4));
    let groups = |s: &str| -> Vec<u16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')))
            .collect()
    };
    let mut digits = groups(&int);
    let mut weight = digits.len() as i32 - 1;
    digits.extend(groups(&frac));
    let leading = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..leading);
    weight -= leading as i32;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    (digits, weight)
}

/// numeric.c's `select_div_scale`: enough scale for 16 significant digits, no less than either
/// input's scale, at most 1000.
fn select_div_scale(dividend: (&BigInt, u32), divisor: (&BigInt, u32)) -> u32 {
    let first = |(value, scale): (&BigInt, u32)| {
        let (digits, weight) = nbase_digits(value, scale);
        match digits.first() {
            Some(&d) => (i64::from(weight), d),
            None => (0, 0),
        }
    };
    let (weight1, first1) = first(dividend);
    let (weight2, first2) = first(divisor);
    let mut qweight = weight1 - weight2;
    if first1 <= first2 {
        qweight -= 1;
    }
    let rscale = (MIN_SIG_DIGITS - qweight * 4)
        .max(i64::from(dividend.1))
        .max(i64::from(divisor.1))
        .clamp(0, MAX_DISPLAY_SCALE);
    rscale as u32
}
