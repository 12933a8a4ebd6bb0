//! Numeric, float and date/time decoding and printing against what Postgres 15 prints.

use std::cmp::Ordering;

use super::super::numeric::Numeric;
use super::super::{datetime, float};

fn num(s: &str) -> Numeric {
    Numeric::parse_text(s.as_bytes()).expect("numeric text")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn numeric_text_round_trips() {
    for s in [
        "0",
        "0.00",
        "-1.5",
        "12345.678",
        "0.0001",
        "10000",
        "-0.001",
        "NaN",
        "Infinity",
        "-Infinity",
        "123456789012345678901234567890.123456789",
    ] {
        assert_eq!(num(s).to_text(), s);
    }
    assert_eq!(num("-0.00").to_text(), "0.00");
    for bad in ["", "-", "1.2.3", "1e5", "abc", "."] {
        assert!(Numeric::parse_text(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn numeric_binary_is_numeric_send() {
    // numeric_send(…) in Postgres 15.
    let cases = [
        ("0.00", "0000000000000002"),
        ("NaN", "00000000c0000000"),
        ("Infinity", "00000000d0000020"),
        ("-Infinity", "00000000f0000020"),
        ("-12345.678", "0003000140000003000109291a7c"),
        ("0.0001", "0001ffff000000040001"),
        ("10000", "00010001000000000001"),
    ];
    for (text, sent) in cases {
        assert_eq!(num(text).to_binary(), hex(sent), "{text}");
        let decoded = Numeric::decode_binary(&hex(sent)).expect("decodes");
        assert_eq!(decoded.to_text(), text);
    }
    for bad in ["", "0001", "00010000000000002710", "0000000000500000"] {
        assert!(Numeric::decode_binary(&hex(bad)).is_err(), "{bad}");
    }
}

#[test]
fn numeric_addition_keeps_the_larger_scale() {
    assert_eq!(num("1.5").add(&num("2.25")).to_text(), "3.75");
    assert_eq!(num("1.50").add(&num("-1.5")).to_text(), "0.00");
    assert_eq!(num("NaN").add(&num("1")), Numeric::NaN);
    assert_eq!(num("Infinity").add(&num("-Infinity")), Numeric::NaN);
    assert_eq!(num("Infinity").add(&num("5")), Numeric::PosInf);
    assert_eq!(num("-Infinity").add(&num("5")), Numeric::NegInf);
}

#[test]
fn numeric_order_is_postgres_order() {
    let sorted = [
        "-Infinity",
        "-2",
        "-1.5",
        "0",
        "1.0",
        "1.01",
        "100",
        "Infinity",
        "NaN",
    ];
    for pair in sorted.windows(2) {
        assert_eq!(num(pair[0]).cmp(&num(pair[1])), Ordering::Less, "{pair:?}");
    }
    assert_eq!(num("1.0").cmp(&num("1.000")), Ordering::Equal);
    assert_eq!(num("NaN").cmp(&num("NaN")), Ordering::Equal);
    assert_eq!(num("1.0").normalized(), num("1.00").normalized());
    assert_eq!(num("100").normalized().to_text(), "100");
}

#[test]
fn avg_uses_select_div_scale() {
    // SELECT avg(x) FROM (VALUES …) in Postgres 15.
    let avg = |sum: &str, count: i64| Numeric::avg(&num(sum), count).map(|n| n.to_text());
    assert_eq!(avg("3", 2).as_deref(), Some("1.5000000000000000"));
    assert_eq!(avg("30", 2).as_deref(), Some("15.0000000000000000"));
    assert_eq!(avg("3.00", 2).as_deref(), Some("1.5000000000000000"));
    assert_eq!(avg("0", 2).as_deref(), Some("0.00000000000000000000"));
    assert_eq!(avg("100002", 2).as_deref(), Some("50001.000000000000"));
    assert_eq!(avg("0.003", 2).as_deref(), Some("0.00150000000000000000"));
    assert_eq!(
        avg("123456789013", 2).as_deref(),
        Some("61728394506.50000000")
    );
    assert_eq!(avg("3.123456789", 2).as_deref(), Some("1.5617283945000000"));
    // Rounding half away from zero, at 16 digits.
    assert_eq!(avg("2", 3).as_deref(), Some("0.66666666666666666667"));
    assert_eq!(avg("-2", 3).as_deref(), Some("-0.66666666666666666667"));
    assert_eq!(avg("1", 3).as_deref(), Some("0.33333333333333333333"));
    assert_eq!(avg("NaN", 2).as_deref(), Some("NaN"));
    assert_eq!(avg("-Infinity", 2).as_deref(), Some("-Infinity"));
    assert_eq!(avg("5", 0), None);
}

#[test]
fn floats_print_as_postgres_prints_them() {
    let cases = [
        (1e15, "1e+15"),
        (123456789012345.0, "123456789012345"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1.5e-7, "1.5e-07"),
        (-0.0, "-0"),
        (0.0, "0"),
        (1e100, "1e+100"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-2.5, "-2.5"),
        (100.0, "100"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "Infinity"),
        (f64::NEG_INFINITY, "-Infinity"),
    ];
    for (v, s) in cases {
        assert_eq!(float::format_f64(v), s);
        assert_eq!(
            float::parse(s.as_bytes()).map(float::canonical_bits).ok(),
            Some(float::canonical_bits(v))
        );
    }
    assert_eq!(float::format_f32(1e6), "1e+06");
    assert_eq!(float::format_f32(123456.0), "123456");
    assert_eq!(float::format_f32(0.1), "0.1");
    assert_eq!(float::format_f32(3.4e38), "3.4e+38");
}

#[test]
fn float_order_puts_nan_last_and_zeros_together() {
    assert_eq!(float::cmp(f64::NAN, f64::INFINITY), Ordering::Greater);
    assert_eq!(float::cmp(f64::NAN, f64::NAN), Ordering::Equal);
    assert_eq!(float::cmp(-0.0, 0.0), Ordering::Equal);
    assert_eq!(float::canonical_bits(-0.0), float::canonical_bits(0.0));
}

#[test]
fn iso_dates_and_times_order_by_instant() {
    let d = |s: &str| datetime::date(s.as_bytes()).expect("date");
    assert_eq!(d("1970-01-01"), 0);
    assert_eq!(d("2000-01-01"), 10957);
    assert!(d("0044-03-15 BC") < d("0001-01-01"));
    assert!(d("0002-01-01 BC") < d("0001-01-01 BC"));
    assert!(d("9999-12-31") < d("10000-01-01"));
    assert!(d("-infinity") < d("0044-03-15 BC") && d("10000-01-01") < d("infinity"));

    let ts = |s: &str| datetime::timestamp(s.as_bytes()).expect("timestamp");
    assert_eq!(ts("1970-01-02 00:00:01.5"), 86_401_500_000);
    assert!(ts("2024-01-05 10:20:30") < ts("2024-01-05 10:20:30.000001"));

    let tz = |s: &str| datetime::timestamptz(s.as_bytes()).expect("timestamptz");
    // When daylight saving ends the local time runs backwards; the instant does not.
    assert!(tz("2024-10-27 02:30:00+02") < tz("2024-10-27 02:10:00+01"));
    assert_eq!(
        tz("2024-01-01 05:30:00+05:30"),
        tz("2024-01-01 00:00:00+00")
    );
    assert_eq!(tz("1970-01-01 00:00:00-00:00:36"), 36_000_000);
    assert!(tz("0044-03-15 10:00:00+00 BC") < tz("0001-01-01 00:00:00+00"));

    let t = |s: &str| datetime::time(s.as_bytes()).expect("time");
    assert_eq!(t("00:00:01.25"), 1_250_000);
    assert!(t("23:59:59.999999") < t("24:00:00"));

    for other_style in ["01/05/2024", "05.01.2024", "Fri Jan 05 10:20:30 2024 CET"] {
        assert!(datetime::date(other_style.as_bytes()).is_err());
        assert!(datetime::timestamptz(other_style.as_bytes()).is_err());
    }
}
