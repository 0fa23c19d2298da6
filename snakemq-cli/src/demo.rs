//! `snakemq demo`.

use std::process::ExitCode;

use crate::common::CliError;

/// Arguments of `snakemq demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {}

pub(crate) async fn run(_args: DemoArgs) -> Result<ExitCode, CliError> {
    Err("not implemented yet".into())
}
