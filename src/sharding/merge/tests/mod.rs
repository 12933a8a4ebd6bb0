//! Tests of value decoding; no server. Expected values were checked against Postgres 15.

mod values;
