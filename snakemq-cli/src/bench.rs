//! `snakemq bench`.

use std::process::ExitCode;

use crate::common::CliError;

/// Arguments of `snakemq bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

pub(crate) async fn run(_args: BenchArgs) -> Result<ExitCode, CliError> {
    Err("not implemented yet".into())
}
