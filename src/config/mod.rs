//! Settings: `config/default.toml` (built in), an optional file, then `KAWA_*` variables.
//!
//! The environment names are a contract with operators' scripts: section and key joined by
//! a double underscore (`KAWA_HTTP__ADDR`). Anything invalid becomes one [`ConfigError`] that
//! names the setting; `main` prints it and exits with code 2.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;

/// The documented defaults, compiled in so the binary and the reference cannot disagree.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

const ENV_PREFIX: &str = "KAWA_";
/// Settings whose values are secrets: read verbatim, never echoed.
const SECRET_KEYS: &[&str] = &[
    "admin_token",
    "store.redis_url",
    "grpc.token",
    "cluster.token",
    "hooks.secret",
    "srt.passphrase",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub admin_token: Secret,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub rtmp: RtmpSettings,
    pub srt: SrtSettings,
    pub webrtc: WebRtcSettings,
    pub hls: HlsSettings,
    pub s3: S3Settings,
    pub grpc: GrpcSettings,
    pub store: StoreSettings,
    pub cluster: ClusterSettings,
    pub transcoder: TranscoderSettings,
    pub hooks: HooksSettings,
    pub recordings: RecordingsSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub public_url: String,
    /// PEM certificate chain and key: HTTPS (with HTTP/2) when both are set.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Proxies in front whose `X-Forwarded-For` is believed: IP addresses and networks,
    /// comma-separated (parsed by [`Settings::load`]).
    pub trusted_proxies: String,
    /// A connection that takes none of the bytes sent to it for this long is closed.
    pub send_timeout_ms: u64,
    #[serde(skip)]
    trusted_networks: Vec<ipnet::IpNet>,
}

impl HttpSettings {
    /// `trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> &Vec<ipnet::IpNet> {
        &self.trusted_networks
    }

    /// Parses `trusted_proxies`: an address is a network of one.
    pub(crate) fn parse_trusted_proxies(value: &str) -> Result<Vec<ipnet::IpNet>, String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<ipnet::IpNet>()
                    .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{a:?} is not an IP address or network (a.b.c.d/n)"))
            })
            .collect()
    }

    /// The certificate and key files, when HTTPS is on.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        (!self.tls_cert.as_os_str().is_empty())
            .then_some((self.tls_cert.as_path(), self.tls_key.as_path()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtmpSettings {
    pub addr: SocketAddr,
    pub app: String,
    pub public_url: String,
    pub takeover: bool,
    pub reconnect_grace_ms: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_bytes: u32,
    pub handshake_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub key_service_url: String,
}

/// SRT ingest (MPEG-TS, the key in the streamid). Its connections share `rtmp`'s app,
/// takeover, grace, limits and timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrtSettings {
    /// UDP address to listen on; empty: no SRT.
    pub addr: String,
    /// AES encryption: callers must give this passphrase (10 to 79 characters); empty:
    /// unencrypted.
    pub passphrase: Secret,
    /// The receiver's latency (SRTO_LATENCY): how long lost packets may take to be
    /// resent before they are given up.
    pub latency_ms: u64,
}

impl SrtSettings {
    /// The listen address, when SRT is on (checked by `validate`).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr.parse().ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebRtcSettings {
    /// UDP address for every WebRTC viewer (ICE-lite, one port); empty: no WHEP.
    pub udp_addr: String,
    /// Addresses announced to browsers as host candidates (behind NAT, in a cluster);
    /// empty: the UDP address when it names one, else the address the viewer reached
    /// Kawa's HTTP port at.
    pub public_ips: Vec<IpAddr>,
    /// WebRTC viewers at once on this node; past it a WHEP request gets 503.
    pub max_sessions: usize,
    /// A session whose browser has not connected (ICE and DTLS) by then is dropped.
    pub connect_timeout_ms: u64,
    /// Sessions one client address may hold that have not connected yet; past it a
    /// WHEP request gets 429. Connected viewers behind one address are not limited.
    pub max_pending_per_ip: usize,
}

impl WebRtcSettings {
    /// The UDP address, when WebRTC is on (checked by `validate`).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr.parse().ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HlsSettings {
    pub segment_seconds: u32,
    /// CMAF part length; segments are made of parts (LL-HLS serves them).
    pub part_seconds: f64,
    pub playlist_segments: usize,
    pub preset: LadderPreset,
    pub retention_seconds: u64,
    pub ffmpeg_path: PathBuf,
    pub x264_preset: String,
    /// How much lower FFmpeg's scheduling priority is than Kawa's (nice(2); 0: the same).
    pub ffmpeg_nice: i32,
    pub restart_max: usize,
    pub restart_window_seconds: u64,
    /// A JPEG of the latest keyframe every this many seconds (0: none).
    pub thumbnail_seconds: u64,
    pub rungs: Vec<RungSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LadderPreset {
    Ladder,
    Passthrough,
}

/// One scaled rendition of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RungSettings {
    pub name: String,
    pub height: u32,
    pub video_kbps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub endpoint: String,
    pub force_path_style: bool,
    pub delete_grace_seconds: u64,
    pub request_timeout_ms: u64,
    /// Fence a cluster's playlists with `If-Match`/`If-None-Match` puts (see
    /// `delivery::fencing`); off for a store that does not honour them.
    pub conditional_writes: bool,
}

impl S3Settings {
    pub fn enabled(&self) -> bool {
        !self.bucket.is_empty()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    pub addr: SocketAddr,
    /// Shared token callers send as `authorization: Bearer <token>`; empty: none asked.
    pub token: Secret,
    pub max_concurrent_requests: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// A Redis URL may carry a password, so it is a secret too.
    pub redis_url: Secret,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Share stream ownership and playlist state with other nodes through Redis.
    pub enabled: bool,
    /// This node's name in Redis; empty: the host name and a random suffix.
    pub node_id: String,
    /// Where other nodes reach this node's HTTP (proxied viewers).
    pub advertise_url: String,
    /// How long a path's lease outlives its owner's last renewal.
    pub lease_ms: u64,
    /// How long a node goes on publishing a stream without reaching Redis.
    pub redis_outage_ms: u64,
    /// Shared secret for node-to-node HTTP and transcoder workers (`authorization: Bearer`).
    pub token: Secret,
    /// Encode the ladder on transcoder workers (`kawa transcoder`) when one is alive.
    pub remote_transcoding: bool,
    /// Keep the parts of each rendition's newest segments in Redis, so that a node
    /// taking over a dead owner's stream lists the segment it had open.
    pub replicate_parts: bool,
}

/// Webhooks: Kawa tells the operator's systems about publishes (and may be told no).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksSettings {
    /// Asked before each publish (after the key was checked): 2xx allows it, any other
    /// answer refuses it; no answer in time means `publish_default`.
    pub publish_url: String,
    /// Told of `publish_started`, `unpublish` and `recording_ready`, with retries.
    pub events_url: String,
    /// HMAC-SHA256 key of the `Kawa-Signature` header.
    pub secret: Secret,
    pub timeout_ms: u64,
    pub publish_default: HookDefault,
    /// Attempts after the first for an event (backoff 0.5 s doubling).
    pub retries: u32,
}

/// Recordings: every segment of a broadcast kept, with VOD playlists when it ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingsSettings {
    /// Record every stream whose own `record` flag is unset.
    pub enabled: bool,
    /// Seconds a finished recording is kept (locally and in S3); 0 keeps it for good.
    pub retention_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookDefault {
    Allow,
    Refuse,
}

/// `kawa transcoder`: a worker that runs FFmpeg for the nodes of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscoderSettings {
    /// The worker's gRPC address.
    pub addr: SocketAddr,
    /// Where nodes reach it; empty: `addr`, when it names one address.
    pub advertise_url: String,
    /// Encodes run at once; more are refused (the node picks another worker).
    pub max_jobs: usize,
}

/// A string that must never reach a log line or an error message.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<empty>"
        } else {
            "<redacted>"
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid setting `{key}` ({origin}): {reason}")]
    Invalid {
        key: String,
        /// Where it was set, as the operator wrote it: the variable, or the file.
        origin: String,
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            origin: env_name(key),
            reason: reason.into(),
        }
    }
}

/// `http.addr` -> `KAWA_HTTP__ADDR`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "__").to_uppercase())
}

mod validate;

impl Settings {
    /// Loads the layered settings from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            // figment skips missing files silently; an operator who names one wants it read.
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Toml::string(&text));
        }
        // figment parses variable values ("123" becomes a number, "0123" loses its zero);
        // secrets are taken verbatim instead.
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(SECRET_KEYS));
        for key in SECRET_KEYS {
            if let Some(value) = std::env::var_os(env_name(key)) {
                let value = value
                    .into_string()
                    .map_err(|_| ConfigError::invalid(key, "not valid UTF-8"))?;
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let mut settings: Settings = figment
            .extract()
            .map_err(|e| from_figment(e, &typed_env_names(), file))?;
        settings.parse_lists()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The documented defaults alone (no file, no environment): what tools and benches
    /// that only need Kawa's encoder settings use.
    pub fn defaults() -> Result<Self, ConfigError> {
        let mut settings: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .map_err(|e| from_figment(e, &[], None))?;
        settings.parse_lists()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings written as one string for environment variables, parsed.
    fn parse_lists(&mut self) -> Result<(), ConfigError> {
        self.http.trusted_networks =
            HttpSettings::parse_trusted_proxies(&self.http.trusted_proxies)
                .map_err(|reason| ConfigError::invalid("http.trusted_proxies", reason))?;
        Ok(())
    }
}

/// The `KAWA_*` variables set now, as dotted keys (`KAWA_HLS__FOO` -> `hls.foo`) with
/// their names, secrets included (only names are ever shown).
fn typed_env_names() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter_map(|name| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            Some((rest.to_lowercase().replace("__", "."), name))
        })
        .collect()
}

/// What the operator typed that names `key` or a setting under it: the variable
/// `KAWA_SRT__ADDR` for the unknown section `srt`, not a name built back from `srt`.
fn typed_setting(key: &str, env: &[(String, String)]) -> Option<(String, String)> {
    env.iter()
        .find(|(dotted, _)| {
            dotted == key
                || dotted
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with('.'))
        })
        .cloned()
}

fn from_figment(err: figment::Error, env: &[(String, String)], file: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let mut path = err.path.clone();
    if let Kind::UnknownField(field, _) = &err.kind {
        // figment's path already ends with the unknown key when it is a map's key
        // (`hls.foo`), and does not for a field of a struct.
        if path.last() != Some(field) {
            path.push(field.clone());
        }
    }
    let key = if path.is_empty() {
        "(file)".to_owned()
    } else {
        path.join(".")
    };
    let from_env = err
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let (key, origin) = match typed_setting(&key, env).filter(|_| from_env) {
        Some((typed, name)) => (typed, name),
        None => {
            let origin = match file {
                Some(file) if !from_env => format!("in {}", file.display()),
                _ => env_name(&key),
            };
            (key, origin)
        }
    };
    let reason = match &err.kind {
        Kind::UnknownField(..) => {
            "unknown setting (check the spelling; see config/default.toml)".to_owned()
        }
        // A type error on a secret would echo its value; none of the secrets is typed,
        // but say nothing about the value to be sure.
        _ if SECRET_KEYS.iter().any(|s| key.starts_with(s)) => "invalid value".to_owned(),
        other => other.to_string(),
    };
    ConfigError::Invalid {
        key,
        origin,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads settings inside a figment jail: a private environment and working directory,
    /// so tests running in parallel never see each other's variables.
    #[allow(clippy::result_large_err)] // figment's Jail closure type, not ours
    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, String> {
        let mut result = Err(String::new());
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (k, v) in env {
                jail.set_env(k, v);
            }
            let path = file.map(|text| {
                jail.create_file("kawa.toml", text).expect("write config");
                PathBuf::from("kawa.toml")
            });
            result = Settings::load(path.as_deref()).map_err(|e| e.to_string());
            Ok(())
        });
        result
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert_eq!(s.http.addr.to_string(), "0.0.0.0:8888");
        assert_eq!(s.rtmp.addr.to_string(), "0.0.0.0:1935");
        assert_eq!(s.rtmp.app, "live");
        assert_eq!(s.grpc.addr.to_string(), "127.0.0.1:50051");
        assert!(s.store.redis_url.is_empty());
        assert!(s.admin_token.is_empty());
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let file = "data_dir = \"/srv/kawa\"\n[http]\naddr = \"127.0.0.1:9000\"\n";
        let s = load(Some(file), &[("KAWA_HTTP__ADDR", "127.0.0.1:9100")]).unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/srv/kawa"));
        assert_eq!(s.http.addr.to_string(), "127.0.0.1:9100");
    }

    #[test]
    fn invalid_address_names_the_setting_and_variable() {
        let err = load(None, &[("KAWA_RTMP__ADDR", "not-an-addr")]).unwrap_err();
        assert!(
            err.contains("`rtmp.addr`") && err.contains("KAWA_RTMP__ADDR"),
            "{err}"
        );
    }

    #[test]
    fn grpc_beyond_loopback_needs_a_token() {
        let err = load(None, &[("KAWA_GRPC__ADDR", "0.0.0.0:50051")]).unwrap_err();
        assert!(err.contains("`grpc.token`"), "{err}");
        let s = load(
            None,
            &[
                ("KAWA_GRPC__ADDR", "0.0.0.0:50051"),
                ("KAWA_GRPC__TOKEN", "a-shared-secret"),
            ],
        )
        .unwrap();
        assert_eq!(s.grpc.token.expose(), "a-shared-secret");
        assert!(!format!("{s:?}").contains("a-shared-secret"));
    }

    #[test]
    fn ffmpeg_runs_at_kawas_priority_by_default_and_never_higher() {
        assert_eq!(load(None, &[]).unwrap().hls.ffmpeg_nice, 0);
        let err = load(None, &[("KAWA_HLS__FFMPEG_NICE", "-5")]).unwrap_err();
        assert!(err.contains("`hls.ffmpeg_nice`"), "{err}");
        let s = load(None, &[("KAWA_HLS__FFMPEG_NICE", "10")]).unwrap();
        assert_eq!(s.hls.ffmpeg_nice, 10);
    }

    #[test]
    fn message_cap_stays_within_what_a_chunk_header_carries() {
        let err = load(None, &[("KAWA_RTMP__MAX_MESSAGE_BYTES", "16777216")]).unwrap_err();
        assert!(err.contains("`rtmp.max_message_bytes`"), "{err}");
    }

    #[test]
    fn unknown_setting_is_refused() {
        let err = load(None, &[("KAWA_HTTP__ADRR", "x")]).unwrap_err();
        assert!(err.contains("`http.adrr` (KAWA_HTTP__ADRR)"), "{err}");
    }

    /// An operator at 3 a.m. needs the name they typed, not one built back from it.
    #[test]
    fn unknown_settings_are_named_as_typed() {
        let err = load(None, &[("KAWA_HLS__FOO", "1")]).unwrap_err();
        assert!(err.contains("`hls.foo` (KAWA_HLS__FOO)"), "{err}");
        assert!(!err.contains("foo.foo"), "{err}");
        let err = load(None, &[("KAWA_RTSP__ADDR", "127.0.0.1:8554")]).unwrap_err();
        assert!(err.contains("`rtsp.addr` (KAWA_RTSP__ADDR)"), "{err}");
        let err = load(Some("[hls]\nfoo = 1\n"), &[]).unwrap_err();
        assert!(err.contains("`hls.foo` (in kawa.toml)"), "{err}");
        let err = load(Some("[hls]\nsegment_seconds = \"two\"\n"), &[]).unwrap_err();
        assert!(
            err.contains("`hls.segment_seconds` (in kawa.toml)"),
            "{err}"
        );
    }

    #[test]
    fn srt_is_off_by_default_and_its_settings_are_checked() {
        let s = load(None, &[]).unwrap();
        assert_eq!(s.srt.addr(), None);
        assert_eq!(s.srt.latency_ms, 120);
        let s = load(None, &[("KAWA_SRT__ADDR", "127.0.0.1:9000")]).unwrap();
        assert_eq!(s.srt.addr().map(|a| a.port()), Some(9000));
        let err = load(None, &[("KAWA_SRT__ADDR", "port 9000")]).unwrap_err();
        assert!(err.contains("srt.addr"), "{err}");
        // SRT's passphrase bounds, and the value never in the message.
        let err = load(None, &[("KAWA_SRT__PASSPHRASE", "short-pw")]).unwrap_err();
        assert!(
            err.contains("srt.passphrase") && !err.contains("short-pw"),
            "{err}"
        );
        let s = load(None, &[("KAWA_SRT__PASSPHRASE", "long-enough-pw")]).unwrap();
        assert!(!format!("{s:?}").contains("long-enough-pw"));
        let err = load(None, &[("KAWA_SRT__LATENCY_MS", "5")]).unwrap_err();
        assert!(err.contains("srt.latency_ms"), "{err}");
    }

    #[test]
    fn bad_redis_url_does_not_echo_the_password() {
        let err = load(None, &[("KAWA_STORE__REDIS_URL", "redis//:hunter2@host")]).unwrap_err();
        assert!(
            err.contains("store.redis_url") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let s = load(None, &[("KAWA_ADMIN_TOKEN", "tok-s3cr3t")]).unwrap();
        assert_eq!(s.admin_token.expose(), "tok-s3cr3t");
        assert!(!format!("{s:?}").contains("tok-s3cr3t"));
    }

    #[test]
    fn numeric_looking_secrets_stay_strings() {
        let s = load(
            None,
            &[("KAWA_ADMIN_TOKEN", "123456"), ("KAWA_RTMP__APP", "live2")],
        )
        .unwrap();
        assert_eq!(s.admin_token.expose(), "123456");
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/kawa.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }));
    }

    #[test]
    fn a_cluster_needs_redis_and_a_real_token_and_no_tls_of_its_own() {
        let on = ("KAWA_CLUSTER__ENABLED", "true");
        let redis = ("KAWA_STORE__REDIS_URL", "redis://127.0.0.1:6379/0");
        let token = ("KAWA_CLUSTER__TOKEN", "a-long-cluster-secret-1234");
        let err = load(None, &[on, token]).unwrap_err();
        assert!(
            err.contains("`cluster.enabled`") && err.contains("redis_url"),
            "{err}"
        );
        let err = load(None, &[on, redis, ("KAWA_CLUSTER__TOKEN", "short")]).unwrap_err();
        assert!(
            err.contains("`cluster.token`") && !err.contains("short"),
            "{err}"
        );
        let tls = [
            on,
            redis,
            token,
            ("KAWA_HTTP__TLS_CERT", "/c.pem"),
            ("KAWA_HTTP__TLS_KEY", "/k.pem"),
        ];
        assert!(load(None, &tls).unwrap_err().contains("TLS"));
        let err = load(
            None,
            &[
                on,
                redis,
                token,
                ("KAWA_CLUSTER__ADVERTISE_URL", "https://x"),
            ],
        )
        .unwrap_err();
        assert!(err.contains("`cluster.advertise_url`"), "{err}");
        let s = load(
            None,
            &[on, redis, token, ("KAWA_CLUSTER__NODE_ID", "node-a")],
        )
        .unwrap();
        assert!(s.cluster.enabled && s.cluster.lease_ms == 3000);
        assert!(!format!("{s:?}").contains("a-long-cluster-secret"));
        let err = load(None, &[on, redis, token, ("KAWA_CLUSTER__NODE_ID", "a/b")]).unwrap_err();
        assert!(err.contains("`cluster.node_id`"), "{err}");
    }
}
