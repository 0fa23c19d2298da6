//! `snakemq listen`.

use std::process::ExitCode;

use crate::common::CliError;

/// Arguments of `snakemq listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct ListenArgs {}

pub(crate) async fn run(_args: ListenArgs) -> Result<ExitCode, CliError> {
    Err("not implemented yet".into())
}
