//! `snakemq send`.

use std::process::ExitCode;

use crate::common::CliError;

/// Arguments of `snakemq send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {}

pub(crate) async fn run(_args: SendArgs) -> Result<ExitCode, CliError> {
    Err("not implemented yet".into())
}
