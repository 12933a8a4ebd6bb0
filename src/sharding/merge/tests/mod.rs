//! Tests of planning and value decoding; no server. Expected values were checked against
//! Postgres 15.

mod plan;
mod values;

use super::*;
