//! The stdio binary seen through rmcp's child-process transport, and its refusal to start.

use std::process::Stdio;

use anyhow::{Context, bail};
use rmcp::{ServiceExt, model::CallToolRequestParams, transport::TokioChildProcess};
use serde_json::json;
use warden_testkit::{EXIT_BAD_ENVIRONMENT, IDENTITIES_ENV, Identities, TOKEN_ENV, stdio_command, stdio_server_binary};

fn identities() -> Identities {
    Identities::new().with("tok-a", "alice").with("tok-b", "bob")
}

#[tokio::test]
async fn whoami_answers_the_identity_of_the_env_token() -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(stdio_server_binary());
    command.env_clear().env(TOKEN_ENV, "tok-b").env(IDENTITIES_ENV, identities().to_json());
    let (transport, _stderr) = TokioChildProcess::builder(command).stderr(Stdio::null()).spawn()?;
    let client = ().serve(transport).await?;

    let result = client.call_tool(CallToolRequestParams::new("whoami")).await?;
    let text = &result.content[0].as_text().context("not text")?.text;
    assert_eq!(text, "bob");

    // env_clear worked: the child sees its token and nothing of ours.
    for (name, expected) in [(TOKEN_ENV, "tok-b"), ("HOME", "<unset>")] {
        let args = json!({ "name": name });
        let serde_json::Value::Object(args) = args else {
            bail!("not an object");
        };
        let result = client.call_tool(CallToolRequestParams::new("env").with_arguments(args)).await?;
        assert_eq!(result.content[0].as_text().context("not text")?.text, expected);
    }

    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_or_missing_token_exits_3_before_serving() -> anyhow::Result<()> {
    for token in [Some("tok-wrong"), None] {
        let output = stdio_command(token, &identities()).stdin(Stdio::null()).output().await?;
        assert_eq!(output.status.code(), Some(i32::from(EXIT_BAD_ENVIRONMENT)), "{token:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(TOKEN_ENV), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn stdio_command_serves_a_known_token() -> anyhow::Result<()> {
    let (transport, _stderr) =
        TokioChildProcess::builder(stdio_command(Some("tok-a"), &identities())).stderr(Stdio::null()).spawn()?;
    let client = ().serve(transport).await?;
    let result = client.call_tool(CallToolRequestParams::new("whoami")).await?;
    assert_eq!(result.content[0].as_text().context("not text")?.text, "alice");
    client.cancel().await?;
    Ok(())
}
