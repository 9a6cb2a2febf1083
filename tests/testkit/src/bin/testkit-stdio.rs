//! `testkit-stdio`: the testkit's MCP tools over stdin/stdout, for warden's stdio tests.
//!
//! It reads `TESTKIT_TOKEN` and `TESTKIT_IDENTITIES` (a JSON object token -> identity); if the
//! token is missing or unknown it says why on stderr and exits with code 3 before serving.

use std::process::ExitCode;

use warden_testkit::{EXIT_BAD_ENVIRONMENT, StdioSettings, serve_stdio};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let settings = match StdioSettings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("testkit-stdio: {error}");
            return ExitCode::from(EXIT_BAD_ENVIRONMENT);
        }
    };
    match serve_stdio(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("testkit-stdio: {error}");
            ExitCode::FAILURE
        }
    }
}
