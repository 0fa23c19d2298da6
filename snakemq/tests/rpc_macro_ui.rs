//! Compile errors of `#[snakemq::service]`: each file in `tests/ui` must fail to compile with
//! exactly the message and span in its `.stderr` snapshot (regenerate with
//! `TRYBUILD=overwrite cargo test -p snakemq --features rpc --test rpc_macro_ui`, then review
//! the diff). The `not_a_message*` snapshots list a few types that do implement
//! `prost::Message` as rustc prints them; a new message type in `snakemq` can change that
//! list, and then the snapshot needs regenerating (the span is what the case pins).
#![cfg(feature = "rpc")]

#[test]
fn service_macro_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
