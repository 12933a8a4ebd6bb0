//! What statements do. Today: which statements change session state, so transaction pooling can carry
//! it between server connections. Read/write classification and the plan cache come next.

pub mod session_ops;
