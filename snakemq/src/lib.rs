//! snakemq facade.
#![forbid(unsafe_code)]
