//! Logging setup. rmcp logs authorization codes, token responses and whole JSON-RPC messages at
//! debug and trace, and HTTP client crates may log headers at trace; whatever filter the
//! operator asks for, those crates are capped at `info` so no secret reaches a log line.

/// Third-party crates whose verbose levels may carry secrets, capped at `info`.
const CAPPED: &[&str] = &["rmcp", "reqwest", "hyper", "hyper_util", "h2", "oauth2", "process_wrap"];

/// The effective filter for `requested`: its directives minus any that would raise a capped
/// crate, plus `crate=info` for each capped crate.
pub fn effective_filter(requested: &str) -> String {
    let mut directives: Vec<String> = requested
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter(|d| {
            let target = d.split(['=', '[']).next().unwrap_or_default();
            !CAPPED.iter().any(|c| target == *c || target.starts_with(&format!("{c}::")))
        })
        .map(str::to_owned)
        .collect();
    if directives.is_empty() {
        directives.push("info".to_owned());
    }
    directives.extend(CAPPED.iter().map(|c| format!("{c}=info")));
    directives.join(",")
}

/// Installs the global subscriber writing to stderr. `RUST_LOG`, if set, replaces the
/// configured filter (still capped).
pub fn init(configured: &str) {
    let requested = std::env::var("RUST_LOG").unwrap_or_else(|_| configured.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(effective_filter(&requested))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(effective_filter("info")));
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::effective_filter;

    #[test]
    fn caps_secret_bearing_crates() {
        let f = effective_filter("trace,rmcp=trace,rmcp::transport::auth=debug,warden=trace,hyper_util::client=trace");
        assert!(f.starts_with("trace,warden=trace,"));
        assert!(!f.contains("rmcp=trace") && !f.contains("auth=debug") && !f.contains("hyper_util::client=trace"));
        for c in super::CAPPED {
            assert!(f.contains(&format!("{c}=info")));
        }
        assert!(tracing_subscriber::EnvFilter::try_new(&f).is_ok());
        assert!(effective_filter("").starts_with("info,"));
    }
}
