//! The snakemq command.
fn main() {}
