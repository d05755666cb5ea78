//! Role module (being written).
use std::process::ExitCode;
/// Role entry point.
pub fn main(_args: Vec<String>) -> ExitCode { ExitCode::FAILURE }
