//! FFmpeg's output back into typed frames: the i-th H.264 stream of its TS is the i-th
//! scaled rung, and its one AAC stream goes with every rung; an Opus stream (WebRTC's
//! audio) is kept apart. Timestamps come back from 33 bits onto the source's unwrapped
//! clock. Pure: bytes in, frames out.

use crate::media::aac::adts_frames;
use crate::media::annexb;
use crate::media::frame::{AudioFrame, Frame, VideoForm, VideoFrame};
use crate::media::opus::{self, OpusPacket};
use crate::media::ts_demux::{
    PesPacket, STREAM_TYPE_ADTS_AAC, STREAM_TYPE_H264, STREAM_TYPE_PRIVATE, TsDemuxError,
    TsDemuxer, Unwrap33,
};

#[derive(Debug)]
pub struct RungDemuxer {
    ts: TsDemuxer,
    rungs: usize,
    clock: Unwrap33,
    /// Opus packets read since the last [`Self::take_opus`].
    opus: Vec<OpusPacket>,
}

impl RungDemuxer {
    /// `reference`: the unwrapped DTS of the first frame FFmpeg is given.
    pub fn new(rungs: usize, reference: i64) -> Self {
        Self {
            ts: TsDemuxer::new(),
            rungs,
            clock: Unwrap33::new(reference),
            opus: Vec::new(),
        }
    }

    /// The Opus packets read so far (WebRTC's audio), in order.
    pub fn take_opus(&mut self) -> Vec<OpusPacket> {
        std::mem::take(&mut self.opus)
    }

    /// FFmpeg's output so far; returns `(rung, frame)` pairs in output order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<(usize, Frame)>, TsDemuxError> {
        let packets = self.ts.push(bytes)?;
        let mut out = Vec::with_capacity(packets.len() * 2);
        for packet in packets {
            self.convert(packet, &mut out);
        }
        Ok(out)
    }

    /// FFmpeg's output ended.
    pub fn flush(&mut self) -> Vec<(usize, Frame)> {
        let mut out = Vec::new();
        for packet in self.ts.flush() {
            self.convert(packet, &mut out);
        }
        out
    }

    fn convert(&mut self, packet: PesPacket, out: &mut Vec<(usize, Frame)>) {
        let (Some(pts), Some(dts)) = (packet.pts, packet.dts) else {
            return;
        };
        match packet.stream_type {
            STREAM_TYPE_H264 => {
                let Some(rung) = self
                    .ts
                    .streams()
                    .iter()
                    .filter(|s| s.stream_type == STREAM_TYPE_H264)
                    .position(|s| s.pid == packet.pid)
                    .filter(|r| *r < self.rungs)
                else {
                    return;
                };
                let dts = self.clock.unwrap(dts);
                let pts = self.clock.unwrap(pts);
                let keyframe = annexb::has_idr(&packet.data);
                out.push((
                    rung,
                    Frame::Video(VideoFrame {
                        dts,
                        pts,
                        keyframe,
                        data: packet.data,
                        form: VideoForm::AnnexB,
                    }),
                ));
            }
            STREAM_TYPE_ADTS_AAC => {
                let first = self.clock.unwrap(pts);
                for (i, frame) in adts_frames(&packet.data).enumerate() {
                    let (range, ticks) = frame;
                    let pts = first + i as i64 * ticks;
                    let data = packet.data.slice(range);
                    for rung in 0..self.rungs {
                        out.push((
                            rung,
                            Frame::Audio(AudioFrame {
                                pts,
                                data: data.clone(),
                            }),
                        ));
                    }
                }
            }
            STREAM_TYPE_PRIVATE if self.is_opus(packet.pid) => {
                let mut pts = self.clock.unwrap(pts);
                // A payload that is not Opus framing is skipped: the audio has a hole.
                for data in opus::ts_access_units(&packet.data).unwrap_or_default() {
                    let samples = i64::from(opus::samples(&data));
                    self.opus.push(OpusPacket { pts, data });
                    pts += samples * 90_000 / opus::RTP_CLOCK;
                }
            }
            _ => {}
        }
    }

    fn is_opus(&self, pid: u16) -> bool {
        (self.ts.streams().iter()).any(|s| s.pid == pid && s.registration == Some(*b"Opus"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ts::TsMuxer;

    #[test]
    fn rung_streams_map_to_rungs_and_audio_goes_to_each() {
        let mut muxer = TsMuxer::new(true, true);
        let mut ts = Vec::new();
        let key = bytes::Bytes::from_static(&[0, 0, 0, 1, 0x65, 1, 2, 3]);
        let modulus = 1i64 << 33;
        let dts = modulus + 900;
        muxer
            .write_frame(
                &Frame::Video(VideoFrame {
                    dts,
                    pts: dts + 3000,
                    keyframe: true,
                    data: key.clone(),
                    form: VideoForm::AnnexB,
                }),
                &mut ts,
            )
            .unwrap();
        let adts = bytes::Bytes::from_static(&[0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC, 9, 9, 9]);
        muxer
            .write_frame(
                &Frame::Audio(AudioFrame {
                    pts: dts,
                    data: adts.clone(),
                }),
                &mut ts,
            )
            .unwrap();
        let mut demuxer = RungDemuxer::new(2, modulus);
        let mut frames = demuxer.push(&ts).unwrap();
        frames.extend(demuxer.flush());
        let video: Vec<_> = frames
            .iter()
            .filter(|(_, f)| matches!(f, Frame::Video(_)))
            .collect();
        assert_eq!(video.len(), 1);
        let (rung, Frame::Video(v)) = video[0] else {
            unreachable!()
        };
        assert_eq!(
            (*rung, v.dts, v.pts, v.keyframe),
            (0, dts, dts + 3000, true)
        );
        let audio: Vec<usize> = frames
            .iter()
            .filter(|(_, f)| matches!(f, Frame::Audio(a) if a.pts == dts && a.data == adts))
            .map(|(r, _)| *r)
            .collect();
        assert_eq!(audio, [0, 1]);
    }
}
