//! Logging: tracing to stderr, human-readable or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

fn quiet(target: &str) -> tracing_subscriber::filter::Directive {
    format!("{target}=info").parse().expect("a valid directive")
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // The SRT stack's debug lines print whole handshakes, streamid (the stream key)
        // and passphrase-derived material included: never below info, whatever is asked.
        .add_directive(quiet("srt_tokio"))
        .add_directive(quiet("srt_protocol"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // A panic (rml_rtmp on malformed input, caught per connection) goes to the log as one
    // line in the log's format, not as raw text on stderr.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        let message = panic_message(info.payload());
        tracing::error!(target: "panic", location = location.as_deref().unwrap_or("?"), "panic: {message}");
    }));
}

/// The text a panic was raised with (`panic!("...")`), or empty.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
