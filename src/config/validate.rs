//! The checks a loaded configuration must pass before Kawa starts: one error naming the
//! setting (and its environment variable) for each kind of mistake.

use super::{ConfigError, Settings};

impl Settings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        if self.http.tls_cert.as_os_str().is_empty() != self.http.tls_key.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "http.tls_cert",
                "http.tls_cert and http.tls_key go together: set both, or neither",
            ));
        }
        let app = &self.rtmp.app;
        if app.is_empty()
            || !app
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
        {
            return Err(ConfigError::invalid(
                "rtmp.app",
                "must be a non-empty name of letters, digits, '_' or '-'",
            ));
        }
        for (key, value, schemes) in [
            (
                "http.public_url",
                &self.http.public_url,
                &["http", "https"][..],
            ),
            (
                "rtmp.public_url",
                &self.rtmp.public_url,
                &["rtmp", "rtmps"][..],
            ),
        ] {
            if !value.is_empty() {
                check_url(key, value, schemes)?;
            }
        }
        if !self.store.redis_url.is_empty() {
            // The URL may hold a password: the error names the setting, never the value.
            check_url(
                "store.redis_url",
                self.store.redis_url.expose(),
                &["redis", "rediss", "redis+unix", "unix"],
            )?;
        }
        self.validate_cluster()?;
        self.validate_hooks()?;
        self.validate_srt()?;
        self.validate_webrtc()?;
        if !self.rtmp.key_service_url.is_empty() {
            check_url(
                "rtmp.key_service_url",
                &self.rtmp.key_service_url,
                &["http", "https"],
            )?;
        }
        for (key, value) in [
            ("rtmp.max_connections", self.rtmp.max_connections as u64),
            (
                "rtmp.max_connections_per_ip",
                self.rtmp.max_connections_per_ip as u64,
            ),
            (
                "grpc.max_concurrent_requests",
                self.grpc.max_concurrent_requests as u64,
            ),
            ("rtmp.handshake_timeout_ms", self.rtmp.handshake_timeout_ms),
            ("rtmp.idle_timeout_ms", self.rtmp.idle_timeout_ms),
            ("hls.segment_seconds", u64::from(self.hls.segment_seconds)),
            ("hls.restart_max", self.hls.restart_max as u64),
            (
                "hls.restart_window_seconds",
                self.hls.restart_window_seconds,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if !(64 * 1024..=crate::ingest::chunk::MAX_MESSAGE_LENGTH)
            .contains(&self.rtmp.max_message_bytes)
        {
            return Err(ConfigError::invalid(
                "rtmp.max_message_bytes",
                "must be from 65536 to 16777215 (what an RTMP chunk header can carry)",
            ));
        }
        if !self.grpc.addr.ip().is_loopback() && self.grpc.token.is_empty() {
            return Err(ConfigError::invalid(
                "grpc.token",
                "must be set when grpc.addr is not a loopback address",
            ));
        }
        let part = self.hls.part_seconds;
        if !(0.1..=f64::from(self.hls.segment_seconds)).contains(&part) {
            return Err(ConfigError::invalid(
                "hls.part_seconds",
                "must be between 0.1 and hls.segment_seconds",
            ));
        }
        if !(0..=19).contains(&self.hls.ffmpeg_nice) {
            return Err(ConfigError::invalid(
                "hls.ffmpeg_nice",
                "must be between 0 and 19 (nice(2): FFmpeg can only run at Kawa's priority or lower)",
            ));
        }
        if self.hls.playlist_segments < 6 {
            return Err(ConfigError::invalid(
                "hls.playlist_segments",
                "must be at least 6 (Apple's HLS authoring rules)",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for rung in &self.hls.rungs {
            let name_ok = !rung.name.is_empty()
                && rung.name != "source"
                && rung.name.len() <= 32
                && rung.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !name_ok || !names.insert(rung.name.as_str()) {
                return Err(ConfigError::invalid(
                    "hls.rungs",
                    format!(
                        "rung name `{}` must be unique, not `source`, and match [a-z0-9_-]{{1,32}}",
                        rung.name
                    ),
                ));
            }
            if rung.height < 16 || rung.height % 2 != 0 || rung.video_kbps == 0 {
                return Err(ConfigError::invalid(
                    "hls.rungs",
                    format!(
                        "rung `{}` needs an even height of at least 16 and a bitrate",
                        rung.name
                    ),
                ));
            }
        }
        if self.s3.enabled() {
            if !self.s3.endpoint.is_empty() {
                check_url("s3.endpoint", &self.s3.endpoint, &["http", "https"])?;
            }
            if self.s3.region.is_empty() {
                return Err(ConfigError::invalid("s3.region", "must not be empty"));
            }
            if self.s3.request_timeout_ms == 0 {
                return Err(ConfigError::invalid(
                    "s3.request_timeout_ms",
                    "must be at least 1",
                ));
            }
        }
        if self.store.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "store.timeout_ms",
                "must be at least 1",
            ));
        }
        let level_ok = tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok();
        if !level_ok {
            return Err(ConfigError::invalid("log.level", "not a valid log filter"));
        }
        Ok(())
    }
}

fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if schemes.contains(&url.scheme()) => Ok(()),
        Ok(url) => Err(ConfigError::invalid(
            key,
            format!(
                "scheme `{}` is not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        )),
        Err(e) => Err(ConfigError::invalid(key, format!("not a URL ({e})"))),
    }
}

impl Settings {
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if !cluster.enabled {
            return Ok(());
        }
        if self.store.redis_url.is_empty() {
            return Err(ConfigError::invalid(
                "cluster.enabled",
                "a cluster shares its state through Redis: set store.redis_url too",
            ));
        }
        if self.http.tls().is_some() {
            return Err(ConfigError::invalid(
                "cluster.enabled",
                "nodes forward viewers to each other over plain HTTP: terminate TLS in front of \
                 the nodes (at the load balancer) instead of http.tls_cert",
            ));
        }
        // Node-to-node HTTP is plain HTTP inside the cluster's network. (Empty: `kawa
        // serve` advertises http.addr, and refuses to start when that is no one address.)
        if !cluster.advertise_url.is_empty() {
            check_url("cluster.advertise_url", &cluster.advertise_url, &["http"])?;
        }
        if cluster.token.expose().len() < 16 {
            return Err(ConfigError::invalid(
                "cluster.token",
                "must be at least 16 characters (the nodes' shared secret)",
            ));
        }
        if self.transcoder.max_jobs == 0 {
            return Err(ConfigError::invalid(
                "transcoder.max_jobs",
                "must be at least 1",
            ));
        }
        if !self.transcoder.advertise_url.is_empty() {
            check_url(
                "transcoder.advertise_url",
                &self.transcoder.advertise_url,
                &["http"],
            )?;
        }
        if !(500..=60_000).contains(&cluster.lease_ms) {
            return Err(ConfigError::invalid(
                "cluster.lease_ms",
                "must be between 500 and 60000",
            ));
        }
        if cluster.redis_outage_ms < cluster.lease_ms || cluster.redis_outage_ms > 3_600_000 {
            return Err(ConfigError::invalid(
                "cluster.redis_outage_ms",
                "must be at least cluster.lease_ms and at most 3600000 (an hour)",
            ));
        }
        if !cluster
            .node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            || cluster.node_id.len() > 64
        {
            return Err(ConfigError::invalid(
                "cluster.node_id",
                "at most 64 letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(())
    }

    fn validate_hooks(&self) -> Result<(), ConfigError> {
        let hooks = &self.hooks;
        for (key, url) in [
            ("hooks.publish_url", &hooks.publish_url),
            ("hooks.events_url", &hooks.events_url),
        ] {
            if !url.is_empty() {
                check_url(key, url, &["http", "https"])?;
                if hooks.secret.expose().len() < 16 {
                    return Err(ConfigError::invalid(
                        "hooks.secret",
                        "webhooks are signed: set a secret of at least 16 characters",
                    ));
                }
            }
        }
        if !(100..=60_000).contains(&hooks.timeout_ms) {
            return Err(ConfigError::invalid(
                "hooks.timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        Ok(())
    }
}

impl Settings {
    fn validate_srt(&self) -> Result<(), ConfigError> {
        let srt = &self.srt;
        if !srt.addr.is_empty() && srt.addr().is_none() {
            return Err(ConfigError::invalid(
                "srt.addr",
                "must be an IP address and port (0.0.0.0:9000), or empty for no SRT",
            ));
        }
        // SRT's own bounds (SRTO_PASSPHRASE); the error never shows the value.
        let length = srt.passphrase.expose().chars().count();
        if !srt.passphrase.is_empty() && !(10..=79).contains(&length) {
            return Err(ConfigError::invalid(
                "srt.passphrase",
                "must be 10 to 79 characters long, or empty for no encryption",
            ));
        }
        if !(20..=8000).contains(&srt.latency_ms) {
            return Err(ConfigError::invalid(
                "srt.latency_ms",
                "must be between 20 and 8000",
            ));
        }
        Ok(())
    }

    fn validate_webrtc(&self) -> Result<(), ConfigError> {
        let webrtc = &self.webrtc;
        if !webrtc.udp_addr.is_empty() && webrtc.udp_addr().is_none() {
            return Err(ConfigError::invalid(
                "webrtc.udp_addr",
                "must be an IP address and port (0.0.0.0:8189), or empty for no WebRTC",
            ));
        }
        if !(1..=100_000).contains(&webrtc.max_sessions) {
            return Err(ConfigError::invalid(
                "webrtc.max_sessions",
                "must be between 1 and 100000",
            ));
        }
        if !(1..=100_000).contains(&webrtc.max_pending_per_ip) {
            return Err(ConfigError::invalid(
                "webrtc.max_pending_per_ip",
                "must be between 1 and 100000",
            ));
        }
        if !(1000..=120_000).contains(&webrtc.connect_timeout_ms) {
            return Err(ConfigError::invalid(
                "webrtc.connect_timeout_ms",
                "must be between 1000 and 120000",
            ));
        }
        Ok(())
    }
}
