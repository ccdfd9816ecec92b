//! MPEG-TS from an encoder (SRT ingest) to typed frames: the same [`MediaEvent`]s the
//! RTMP path makes, so both front doors feed one pipeline. Pure: bytes in, events out.
//!
//! A TS carries no AVC, HEVC or AAC configuration record: the video configuration comes
//! from the parameter sets in the stream (encoders repeat them before every IDR or IRAP),
//! the audio one from the ADTS headers. Timestamps stay on the encoder's clock, unwrapped past 33 bits.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::aac::{self, AacError};
use super::annexb;
use super::avc::{AvcError, START_CODE};
use super::demux::MediaEvent;
use super::frame::{
    AudioConfig, AudioFrame, CodecConfig, Frame, VideoConfig, VideoForm, VideoFrame,
};
use super::hevc::{self, HevcDecoderConfig, HevcError};
use super::interleave::{self, Interleaver};
use super::ts_demux::{
    PesPacket, STREAM_TYPE_ADTS_AAC, STREAM_TYPE_H264, STREAM_TYPE_HEVC, TsDemuxError, TsDemuxer,
    Unwrap33,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsIngestError {
    #[error(transparent)]
    Ts(#[from] TsDemuxError),
    #[error("H.264 in the TS: {0}")]
    Avc(#[from] AvcError),
    #[error("HEVC in the TS: {0}")]
    Hevc(#[from] HevcError),
    #[error("AAC in the TS: {0}")]
    Aac(#[from] AacError),
    #[error("video before the first parameter sets")]
    NoVideoConfig,
    #[error("a {0} PES without a timestamp")]
    NoTimestamp(&'static str),
    /// Said once per stream: its video is left out (the audio goes on).
    #[error(
        "video stream type {0:#04x} ({1}) is not taken over SRT; H.264 (0x1b) and HEVC (0x24) are"
    )]
    UnsupportedVideo(u8, &'static str),
}

/// Turns one publisher's TS into configuration changes and frames.
#[derive(Debug)]
pub struct TsIngest {
    ts: TsDemuxer,
    config: CodecConfig,
    /// Set by the first timestamp: one clock for every elementary stream.
    clock: Option<Unwrap33>,
    /// The configuration has been passed on: every track the PMT lists has its own
    /// (or one never came). Until then frames are held, so the stream starts with all
    /// its tracks at once, as an RTMP publisher's sequence headers make it start.
    announced: bool,
    /// Frames wait here until the other track caught up: they leave in time order.
    queue: Interleaver,
    /// A video stream type Kawa does not take was reported.
    told_unsupported: bool,
}

impl Default for TsIngest {
    fn default() -> Self {
        Self::new()
    }
}

impl TsIngest {
    pub fn new() -> Self {
        Self {
            ts: TsDemuxer::for_network(),
            config: CodecConfig::default(),
            clock: None,
            announced: false,
            queue: Interleaver::default(),
            told_unsupported: false,
        }
    }

    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// Whether the program has a video track, once its PMT was read (what RTMP's
    /// onMetaData tells: an audio-only stream starts without waiting for video).
    pub fn has_video(&self) -> Option<bool> {
        (!self.ts.streams().is_empty()).then(|| self.video_type().is_some())
    }

    /// The stream type of the program's video track: the first H.264 or HEVC it lists.
    fn video_type(&self) -> Option<u8> {
        self.ts
            .streams()
            .iter()
            .map(|s| s.stream_type)
            .find(|t| matches!(*t, STREAM_TYPE_H264 | STREAM_TYPE_HEVC))
    }

    /// Bytes skipped to regain sync and PES dropped for lost packets, so far.
    pub fn damage(&self) -> (u64, u64) {
        (self.ts.skipped_bytes, self.ts.broken_pes)
    }

    /// Feeds bytes as received; appends what they completed, in order. A bad PES is one
    /// error in `out`; the stream goes on.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Result<MediaEvent, TsIngestError>>) {
        match self.ts.push(bytes) {
            Ok(packets) => {
                for packet in packets {
                    self.convert(packet, out);
                }
            }
            Err(e) => out.push(Err(e.into())),
        }
    }

    /// The PMT lists a stream of this type.
    fn listed(&self, stream_type: u8) -> bool {
        self.ts
            .streams()
            .iter()
            .any(|s| s.stream_type == stream_type)
    }

    /// Every track the PMT lists has a configuration.
    fn complete(&self) -> bool {
        (self.video_type().is_none() || self.config.video.is_some())
            && (!self.listed(STREAM_TYPE_ADTS_AAC) || self.config.audio.is_some())
    }

    /// Both tracks are listed: frames wait for the other track.
    fn two_tracks(&self) -> bool {
        self.video_type().is_some() && self.listed(STREAM_TYPE_ADTS_AAC)
    }

    fn config_changed(&mut self, out: &mut Vec<Result<MediaEvent, TsIngestError>>) {
        if self.announced {
            // What came before goes out under the old configuration.
            self.drain(true, out);
            out.push(Ok(MediaEvent::Config(self.config.clone())));
        } else if self.complete() {
            self.announced = true;
            out.push(Ok(MediaEvent::Config(self.config.clone())));
        }
    }

    fn frame(&mut self, frame: Frame, out: &mut Vec<Result<MediaEvent, TsIngestError>>) {
        self.queue.push(frame);
        if !self.announced {
            // A listed track that sends nothing must not hold the others back for good.
            if self.queue.waited() < interleave::MAX_WAIT && self.queue.len() < interleave::MAX_HELD
            {
                return;
            }
            self.announced = true;
            out.push(Ok(MediaEvent::Config(self.config.clone())));
        }
        self.drain(false, out);
    }

    fn drain(&mut self, all: bool, out: &mut Vec<Result<MediaEvent, TsIngestError>>) {
        let both = self.two_tracks();
        self.queue
            .drain(both, all, &mut |f| out.push(Ok(MediaEvent::Frame(f))));
    }

    fn time(&mut self, raw: u64) -> i64 {
        self.clock
            .get_or_insert_with(|| Unwrap33::new(raw as i64))
            .unwrap(raw)
    }

    fn convert(&mut self, packet: PesPacket, out: &mut Vec<Result<MediaEvent, TsIngestError>>) {
        if let Some(name) = unsupported_video(packet.stream_type) {
            if !self.told_unsupported {
                self.told_unsupported = true;
                out.push(Err(TsIngestError::UnsupportedVideo(
                    packet.stream_type,
                    name,
                )));
            }
            return;
        }
        // One track of each kind: the first the PMT lists (OBS can send several audio
        // tracks; the others are not passed on).
        let first = self
            .ts
            .streams()
            .iter()
            .find(|s| s.stream_type == packet.stream_type)
            .map(|s| s.pid);
        if first != Some(packet.pid) {
            return;
        }
        match packet.stream_type {
            STREAM_TYPE_H264 | STREAM_TYPE_HEVC
                if self.video_type() == Some(packet.stream_type) =>
            {
                let result = self.video(packet, out);
                if let Err(e) = result {
                    out.push(Err(e));
                }
            }
            STREAM_TYPE_ADTS_AAC => self.audio(packet, out),
            // Other streams (KLV, SCTE-35, a second program's tracks) are not passed on.
            _ => {}
        }
    }

    fn video(
        &mut self,
        packet: PesPacket,
        out: &mut Vec<Result<MediaEvent, TsIngestError>>,
    ) -> Result<(), TsIngestError> {
        let (Some(pts), Some(dts)) = (packet.pts, packet.dts) else {
            return Err(TsIngestError::NoTimestamp("video"));
        };
        let hevc = packet.stream_type == STREAM_TYPE_HEVC;
        let keyframe = if hevc {
            hevc::has_irap(&packet.data)
        } else {
            annexb::has_idr(&packet.data)
        };
        let mut data = packet.data;
        if keyframe && hevc {
            self.hevc_keyframe(&mut data, out)?;
        } else if keyframe {
            match annexb::decoder_config(&data) {
                Ok(avc) => {
                    let video = VideoConfig::Avc(avc);
                    if self.config.video.as_deref() != Some(&video) {
                        self.config.video = Some(Arc::new(video));
                        self.config_changed(out);
                    }
                }
                // An IDR without its parameter sets: they are put in front (every
                // segment must decode on its own), from the last ones seen.
                Err(AvcError::NoSps | AvcError::NoPps) => {
                    let Some(VideoConfig::Avc(avc)) = self.config.video.as_deref() else {
                        return Err(TsIngestError::NoVideoConfig);
                    };
                    let mut with = BytesMut::new();
                    for set in avc.sps.iter().chain(&avc.pps) {
                        with.extend_from_slice(&START_CODE);
                        with.extend_from_slice(set);
                    }
                    with.extend_from_slice(&data);
                    data = with.freeze();
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.config.video.is_none() {
            return Err(TsIngestError::NoVideoConfig);
        }
        let offset = composition_offset(dts, pts);
        let dts = self.time(dts);
        let frame = Frame::Video(VideoFrame {
            dts,
            pts: dts + offset,
            keyframe,
            data,
            form: VideoForm::AnnexB,
        });
        self.frame(frame, out);
        Ok(())
    }

    /// An HEVC IRAP: its parameter sets are the configuration; without them, the last
    /// ones seen are put in front (every segment must decode on its own).
    fn hevc_keyframe(
        &mut self,
        data: &mut Bytes,
        out: &mut Vec<Result<MediaEvent, TsIngestError>>,
    ) -> Result<(), TsIngestError> {
        match HevcDecoderConfig::from_annexb(data)? {
            Some(config) => {
                let video = VideoConfig::Hevc(config);
                if self.config.video.as_deref() != Some(&video) {
                    self.config.video = Some(Arc::new(video));
                    self.config_changed(out);
                }
            }
            None => {
                let Some(VideoConfig::Hevc(config)) = self.config.video.as_deref() else {
                    return Err(TsIngestError::NoVideoConfig);
                };
                *data = Bytes::from(config.with_parameter_sets(data));
            }
        }
        Ok(())
    }

    fn audio(&mut self, packet: PesPacket, out: &mut Vec<Result<MediaEvent, TsIngestError>>) {
        let Some(pts) = packet.pts else {
            out.push(Err(TsIngestError::NoTimestamp("audio")));
            return;
        };
        let first = self.time(pts);
        let data: &Bytes = &packet.data;
        for (i, (range, ticks)) in aac::adts_frames(data).enumerate() {
            let frame = data.slice(range);
            match aac::config_of_adts(&frame).and_then(|asc| Ok((asc.adts()?, asc))) {
                Ok((adts, asc)) => {
                    // The header's fields, not its length or CRC bit, make the config.
                    if self.config.audio.as_ref().is_none_or(|a| a.adts != adts) {
                        self.config.audio = Some(Arc::new(AudioConfig { asc, adts }));
                        self.config_changed(out);
                    }
                }
                Err(e) => {
                    out.push(Err(e.into()));
                    return;
                }
            }
            let frame = Frame::Audio(AudioFrame {
                pts: first + i as i64 * ticks,
                data: frame,
            });
            self.frame(frame, out);
        }
    }
}

/// Video stream types (ISO/IEC 13818-1 Table 2-34) encoders send that Kawa does not take.
fn unsupported_video(stream_type: u8) -> Option<&'static str> {
    match stream_type {
        0x01 | 0x02 => Some("MPEG-2 video"),
        0x10 => Some("MPEG-4 part 2"),
        0x33 => Some("VVC"),
        _ => None,
    }
}

/// The PTS minus the DTS, both 33-bit. One past half the range was negative (a PTS
/// before its DTS: invalid, but some muxers send it), and is taken as 0.
fn composition_offset(dts: u64, pts: u64) -> i64 {
    let offset = pts.wrapping_sub(dts) & ((1 << 33) - 1);
    if offset >= 1 << 32 { 0 } else { offset as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 s of 160x120 H.264 (an IDR each second, B-frames) and AAC-LC 48 kHz stereo,
    /// muxed by FFmpeg into TS as OBS and FFmpeg send it over SRT (tests/fixtures/make.sh).
    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/h264_aac.ts");

    fn run(chunks: impl Iterator<Item = Vec<u8>>) -> Vec<Result<MediaEvent, TsIngestError>> {
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        for chunk in chunks {
            ingest.push(&chunk, &mut out);
        }
        out
    }

    fn frames(events: &[Result<MediaEvent, TsIngestError>]) -> (Vec<&VideoFrame>, usize) {
        let mut video = Vec::new();
        let mut audio = 0;
        for e in events {
            match e {
                Ok(MediaEvent::Frame(Frame::Video(v))) => video.push(v),
                Ok(MediaEvent::Frame(Frame::Audio(_))) => audio += 1,
                _ => {}
            }
        }
        (video, audio)
    }

    #[test]
    fn a_real_ts_gives_configs_then_every_frame() {
        // SRT delivers 1316-byte messages (7 packets); any split must give the same.
        let events = run(FIXTURE.chunks(1316).map(<[u8]>::to_vec));
        assert!(events.iter().all(Result::is_ok), "{events:?}");
        // One configuration, with both tracks, before any frame: the stream starts
        // whole (the audio that came before the first SPS waited for it).
        let Some(Ok(MediaEvent::Config(config))) = events.first() else {
            panic!("the first event is not a config: {:?}", events.first());
        };
        let configs = events
            .iter()
            .filter(|e| matches!(e, Ok(MediaEvent::Config(_))))
            .count();
        assert_eq!(configs, 1);
        let info = config.video.as_ref().unwrap().info();
        assert_eq!((info.width, info.height), (160, 120));
        let audio = config.audio.as_ref().unwrap();
        assert_eq!((audio.asc.sample_rate, audio.asc.channels()), (48000, 2));
        let (video, audio_frames) = frames(&events);
        // 25 fps for 2 s, but the last PES of each track is complete only when the next
        // one starts (a live stream goes on), and video waits for audio as old: 47 to
        // 49 video frames, and 95 audio frames (48000 / 1024 a second, plus priming)
        // less FFmpeg's last batch of up to 10.
        assert!((47..=49).contains(&video.len()), "{}", video.len());
        assert!((85..=95).contains(&audio_frames), "{audio_frames}");
        let keys: Vec<i64> = video.iter().filter(|v| v.keyframe).map(|v| v.dts).collect();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1] - keys[0], 90_000);
        // B-frames: some PTS ahead of DTS, none behind; DTS strictly rising by 3600.
        assert!(video.iter().all(|v| v.pts >= v.dts));
        assert!(video.iter().any(|v| v.pts > v.dts));
        assert!(video.windows(2).all(|w| w[1].dts - w[0].dts == 3600));
        assert!(
            video
                .iter()
                .filter(|v| v.keyframe)
                .all(|v| { annexb::decoder_config(&v.data).is_ok() })
        );
        // Both tracks in time order, as RTMP gives them (FFmpeg's TS sends audio in
        // batches up to 0.7 s late).
        let times: Vec<i64> = events
            .iter()
            .filter_map(|e| match e {
                Ok(MediaEvent::Frame(Frame::Video(v))) => Some(v.dts),
                Ok(MediaEvent::Frame(Frame::Audio(a))) => Some(a.pts),
                _ => None,
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let bytewise = run(FIXTURE.chunks(1).map(<[u8]>::to_vec));
        assert_eq!(bytewise, events);
    }

    /// OBS's multitrack audio: only the first AAC track is taken.
    #[test]
    fn of_several_audio_tracks_the_first_is_taken() {
        let events = run(std::iter::once(
            include_bytes!("../../tests/fixtures/two_audio_tracks.ts").to_vec(),
        ));
        let audio: Vec<i64> = events
            .iter()
            .filter_map(|e| match e {
                Ok(MediaEvent::Frame(Frame::Audio(a))) => Some(a.pts),
                _ => None,
            })
            .collect();
        // One track of 1 s at 48 kHz (47 frames, less the open last PES), in order.
        assert!((30..=47).contains(&audio.len()), "{}", audio.len());
        assert!(
            audio.windows(2).all(|w| w[1] > w[0]),
            "two tracks interleaved"
        );
    }

    /// HEVC in TS (OBS's HEVC over SRT): the configuration from the in-band parameter
    /// sets, then every frame, the first an IRAP that decodes on its own.
    #[test]
    fn hevc_gives_its_configuration_from_the_parameter_sets_then_its_frames() {
        let events = run(FIXTURE_HEVC.chunks(1316).map(<[u8]>::to_vec));
        assert!(events.iter().all(Result::is_ok), "{events:?}");
        let Some(Ok(MediaEvent::Config(config))) = events.first() else {
            panic!("the first event is not a config: {:?}", events.first());
        };
        let Some(VideoConfig::Hevc(hevc)) = config.video.as_deref() else {
            panic!("not HEVC: {config:?}");
        };
        assert_eq!((hevc.info.width, hevc.info.height), (160, 120));
        assert!(hevc.codec_string().starts_with("hvc1.1.6.L"));
        let (video, _) = frames(&events);
        // 0.2 s at 25 fps; the last PES completes only when the next would start.
        assert!(video.len() >= 4, "{} frames", video.len());
        assert!(video[0].keyframe);
        assert_eq!(
            HevcDecoderConfig::from_annexb(&video[0].data),
            Ok(Some(hevc.clone()))
        );
    }

    /// A stream type Kawa does not take is named once, and nothing passes.
    #[test]
    fn mpeg2_video_is_named_once_and_passes_nothing() {
        let mut muxed = Vec::new();
        let mut ts = crate::media::ts::TsMuxer::new(true, false);
        let frame = VideoFrame {
            dts: 0,
            pts: 0,
            keyframe: true,
            data: Bytes::from_static(&[0, 0, 1, 0xB3, 0, 0]),
            form: VideoForm::AnnexB,
        };
        for _ in 0..3 {
            ts.write_video(&frame, &mut muxed).unwrap();
        }
        // Every PMT says MPEG-2 video (0x02) instead of H.264: the stream type byte
        // (after the section's 12-byte head: no program info) and the CRC rewritten.
        for pmt in muxed.chunks_mut(188).filter(|p| p[1] & 0x1F == 0x10) {
            let section = 5;
            assert_eq!(pmt[section + 12], 0x1B);
            pmt[section + 12] = 0x02;
            let length = usize::from(pmt[section + 1] & 0x0F) << 8 | usize::from(pmt[section + 2]);
            let end = section + 3 + length - 4;
            let crc = crc::Crc::<u32>::new(&crc::CRC_32_MPEG_2).checksum(&pmt[section..end]);
            pmt[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        }
        let events = run(std::iter::once(muxed));
        assert_eq!(
            events,
            [Err(TsIngestError::UnsupportedVideo(0x02, "MPEG-2 video"))],
            "{events:?}"
        );
    }

    const FIXTURE_HEVC: &[u8] = include_bytes!("../../tests/fixtures/hevc_video.ts");

    #[test]
    fn lost_packets_drop_their_frames_and_the_stream_goes_on() {
        // In the second second, lose one packet in twenty (as a link past its latency
        // would), with junk bytes in its place.
        let mut damaged = Vec::new();
        let packets = FIXTURE.len() / 188;
        for (i, packet) in FIXTURE.chunks(188).enumerate() {
            if i > packets / 2 && i % 20 == 7 {
                damaged.extend_from_slice(&[0x47, 1, 2, 3, 0x47]);
                continue;
            }
            damaged.extend_from_slice(packet);
        }
        let mut ingest = TsIngest::new();
        let mut events = Vec::new();
        ingest.push(&damaged, &mut events);
        let (video, audio) = frames(&events);
        let (skipped, broken) = ingest.damage();
        assert!(skipped > 0 && broken > 0, "{skipped} {broken}");
        // Frames with a lost packet are gone; the others all came through, in order.
        assert!(video.len() > 20 && video.len() < 49, "{}", video.len());
        assert!(audio > 10);
        assert!(video.windows(2).all(|w| w[1].dts > w[0].dts));
    }

    #[test]
    fn garbage_never_panics_and_makes_no_frames() {
        let mut ingest = TsIngest::new();
        let mut out = Vec::new();
        let mut noise = 0x1234_5678u32;
        for _ in 0..2000 {
            let chunk: Vec<u8> = (0..1316)
                .map(|i| {
                    noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    if i % 188 == 0 {
                        0x47
                    } else {
                        (noise >> 24) as u8
                    }
                })
                .collect();
            ingest.push(&chunk, &mut out);
        }
        assert!(!out.iter().any(|e| matches!(e, Ok(MediaEvent::Frame(_)))));
    }

    #[test]
    fn composition_offsets_across_the_wrap_and_negative_ones() {
        assert_eq!(composition_offset((1 << 33) - 1000, 2000), 3000);
        assert_eq!(composition_offset(100, 3100), 3000);
        assert_eq!(composition_offset(3100, 100), 0);
    }
}
