//! Preparing a source (publication + slot) and one catch-up round: peek, decode, route, apply on
//! the targets, commit, advance.

use super::{CatchupError, CatchupTable, Round, Route};

pub(super) async fn prepare(
    _source: &tokio_postgres::Client,
    _run_id: &str,
    _source_index: usize,
    _tables: &[CatchupTable],
) -> Result<(), CatchupError> {
    Err(CatchupError::Unfinished)
}

pub(super) async fn apply_round(
    _source: &tokio_postgres::Client,
    _targets: &[&tokio_postgres::Client],
    _run_id: &str,
    _source_index: usize,
    _tables: &[CatchupTable],
    _route: Route<'_>,
    _upto_lsn: Option<&str>,
) -> Result<Round, CatchupError> {
    Err(CatchupError::Unfinished)
}
