//! `runledger stats` (not built yet).
use std::process::ExitCode;

use crate::ctx::{Ctx, Problem};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_ctx: &Ctx, _args: Args) -> anyhow::Result<ExitCode> {
    Err(Problem("`stats` is not available in this build yet".into()).into())
}
