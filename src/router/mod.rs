//! What statements do, for routing and for carrying session state.
//!
//! - [`session_ops`]: which statements change session state, so transaction pooling can carry it
//!   between server connections (a small lexer, run on every simple query).
//! - [`classify`]: sqlparser's AST turned into the router's own [`plan`] types; nothing outside this
//!   module sees a sqlparser type, but `sharding::extract` (which classify calls for each
//!   statement's sharding plan) and `sharding::split`.
//! - [`plan`]: statement kinds and write reasons, and [`plan::UnitRouter`], which folds the plans of
//!   one unit (a Query, or a batch up to Sync) into a primary/replica [`plan::Decision`].
//! - [`fingerprint`]: the plan cache's key (the text with literals, comments and spacing
//!   normalized away) and `/* pgscale: … */` routing hints.
//! - [`cache`]: plans by fingerprint, bounded, with hit/miss/unparsable counters.
//! - [`functions`]: which function names write (built-ins, configured, learnt from the database).

pub mod cache;
pub mod classify;
pub mod fingerprint;
pub mod functions;
pub mod plan;
pub mod session_ops;

pub use cache::{PlanCache, PlanCacheStats};
pub use classify::classify;
pub use fingerprint::{fingerprint, leading_hint};
pub use functions::{FunctionCatalog, LEARN_VOLATILE_SQL};
pub use plan::{Decision, Hint, Kind, Plan, PrimaryReason, StatementPlan, UnitRouter, WriteReason};
