//! WebRTC's series per stream, registered with Kawa's registry on first use.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::metrics::METRICS;

struct Families {
    viewers: IntGaugeVec,
    sent_bytes: IntCounterVec,
    nacks: IntCounterVec,
    keyframe_requests: IntCounterVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    let gauge = |name: &str, help: &str| {
        IntGaugeVec::new(Opts::new(name, help), &["stream"]).expect("valid metric")
    };
    let counter = |name: &str, help: &str| {
        IntCounterVec::new(Opts::new(name, help), &["stream"]).expect("valid metric")
    };
    let f = Families {
        viewers: gauge(
            "kawa_webrtc_viewers",
            "WebRTC (WHEP) viewers of the stream on this node",
        ),
        sent_bytes: counter(
            "kawa_webrtc_sent_bytes_total",
            "RTP bytes sent to the stream's WebRTC viewers, resends included",
        ),
        nacks: counter(
            "kawa_webrtc_nacks_total",
            "NACKs (lost packets asked again) from the stream's WebRTC viewers",
        ),
        keyframe_requests: counter(
            "kawa_webrtc_keyframe_requests_total",
            "PLI/FIR from the stream's WebRTC viewers (answered with the next keyframe)",
        ),
    };
    for c in [
        Box::new(f.viewers.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(f.sent_bytes.clone()),
        Box::new(f.nacks.clone()),
        Box::new(f.keyframe_requests.clone()),
    ] {
        METRICS
            .registry
            .register(c)
            .expect("metric names are unique");
    }
    f
});

/// One stream's WebRTC series; removed on drop.
pub struct StreamSeries {
    stream: String,
    pub viewers: IntGauge,
    pub sent_bytes: IntCounter,
    pub nacks: IntCounter,
    pub keyframe_requests: IntCounter,
}

impl StreamSeries {
    pub fn new(stream: &str) -> Self {
        let f = &*FAMILIES;
        Self {
            stream: stream.to_owned(),
            viewers: f.viewers.with_label_values(&[stream]),
            sent_bytes: f.sent_bytes.with_label_values(&[stream]),
            nacks: f.nacks.with_label_values(&[stream]),
            keyframe_requests: f.keyframe_requests.with_label_values(&[stream]),
        }
    }
}

impl Drop for StreamSeries {
    fn drop(&mut self) {
        let f = &*FAMILIES;
        let s = [self.stream.as_str()];
        let _ = f.viewers.remove_label_values(&s);
        let _ = f.sent_bytes.remove_label_values(&s);
        let _ = f.nacks.remove_label_values(&s);
        let _ = f.keyframe_requests.remove_label_values(&s);
    }
}
