//! Logging set-up shared by every service: `RUST_LOG` filtering (default `info`), and
//! `LOG_FORMAT=json` for one JSON object per line.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Call once, first thing in `main`; a second call is a no-op.
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,lapin=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let result = if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .with_current_span(true)
            .try_init()
    } else {
        // Colours only for a terminal: piped output (make run's prefixes, log files) stays plain.
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "logging initialised");
    }
}
