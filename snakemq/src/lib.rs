//! snakemq facade.
#![forbid(unsafe_code)]

pub mod proto;
