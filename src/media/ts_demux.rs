//! An MPEG-TS demuxer (ISO/IEC 13818-1) for what FFmpeg writes on stdout: one program,
//! H.264 and ADTS AAC elementary streams, one PES per access unit (audio PES may hold
//! several ADTS frames). Bytes in, whole PES packets out; no I/O.
//!
//! Written here rather than on `mpeg2ts-reader`: that crate hands PES payloads out in
//! borrowed pieces through per-PID consumer objects, and the reassembly into owned
//! frames, the caps and the PSI choices below are most of this file anyway.
//!
//! Caps: every PES is at most [`MAX_PES_BYTES`], a program at most [`MAX_STREAMS`]
//! elementary streams. On a pipe (FFmpeg's stdout) a lost sync byte is an error; from the
//! network ([`TsDemuxer::for_network`], SRT ingest) packets can be lost, so the demuxer
//! finds the next sync byte and drops a PES whose continuity counter skipped.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use crc::{CRC_32_MPEG_2, Crc};

pub const TS_PACKET_LEN: usize = 188;
const SYNC_BYTE: u8 = 0x47;
/// Larger than any frame Kawa accepts at ingest (`rtmp.max_message_bytes`, 8 MiB).
pub const MAX_PES_BYTES: usize = 16 * 1024 * 1024;
pub const MAX_STREAMS: usize = 16;

pub const STREAM_TYPE_H264: u8 = 0x1B;
pub const STREAM_TYPE_HEVC: u8 = 0x24;
pub const STREAM_TYPE_ADTS_AAC: u8 = 0x0F;
/// PES private data: what it holds is named by a registration descriptor ("Opus").
pub const STREAM_TYPE_PRIVATE: u8 = 0x06;

const MPEG_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_MPEG_2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsDemuxError {
    #[error("lost TS sync: byte {0:#04x} where 0x47 belongs")]
    LostSync(u8),
    #[error("PES on PID {pid:#x} grew past {MAX_PES_BYTES} bytes")]
    PesTooLarge { pid: u16 },
    #[error("PES on PID {pid:#x} has a malformed header")]
    BadPesHeader { pid: u16 },
    #[error("the program has more than {MAX_STREAMS} elementary streams")]
    TooManyStreams,
}

/// An elementary stream of the program, in PMT order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementaryStream {
    pub pid: u16,
    pub stream_type: u8,
    /// The format identifier of its registration descriptor (ISO/IEC 13818-1 2.6.8),
    /// which names what a private stream holds (`Opus`).
    pub registration: Option<[u8; 4]>,
}

/// One whole PES packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PesPacket {
    pub pid: u16,
    pub stream_type: u8,
    /// 33-bit, 90 kHz, as written.
    pub pts: Option<u64>,
    /// 33-bit; equals `pts` when the header left it out.
    pub dts: Option<u64>,
    pub data: Bytes,
}

#[derive(Debug, Default)]
struct PesBuffer {
    stream_type: u8,
    /// Header and payload so far.
    bytes: BytesMut,
    started: bool,
    /// The last continuity counter seen (network mode).
    counter: Option<u8>,
}

/// The format identifier of the registration descriptor (tag 5) among `descriptors`.
fn registration(mut descriptors: &[u8]) -> Option<[u8; 4]> {
    while let [tag, len, rest @ ..] = descriptors {
        let body = rest.get(..usize::from(*len))?;
        if *tag == 0x05 && body.len() >= 4 {
            return Some([body[0], body[1], body[2], body[3]]);
        }
        descriptors = &rest[body.len()..];
    }
    None
}

/// Demuxes one TS byte stream, fed in pieces of any size.
#[derive(Debug, Default)]
pub struct TsDemuxer {
    /// Bytes of a packet split across two pushes.
    partial: Vec<u8>,
    pmt_pid: Option<u16>,
    streams: Vec<ElementaryStream>,
    pes: HashMap<u16, PesBuffer>,
    /// Network input: resynchronise and check continuity instead of failing.
    network: bool,
    /// Bytes skipped to find sync, and PES dropped for a continuity gap (network mode).
    pub skipped_bytes: u64,
    pub broken_pes: u64,
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The program's elementary streams, once a PMT has been read.
    pub fn streams(&self) -> &[ElementaryStream] {
        &self.streams
    }

    /// For TS from the network (SRT): packets may be lost or cut, so a lost sync byte is
    /// skipped over, and a PES with a gap in its continuity counters is dropped whole.
    pub fn for_network() -> Self {
        Self {
            network: true,
            ..Self::default()
        }
    }

    /// Feeds bytes; returns the PES packets they completed, in order.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<PesPacket>, TsDemuxError> {
        if self.network {
            return Ok(self.push_resyncing(data));
        }
        self.push_aligned(data)
    }

    /// Network input: packets found wherever a sync byte starts 188 bytes of them.
    fn push_resyncing(&mut self, data: &[u8]) -> Vec<PesPacket> {
        let mut out = Vec::new();
        let joined;
        let data = if self.partial.is_empty() {
            data
        } else {
            let mut buffer = std::mem::take(&mut self.partial);
            buffer.extend_from_slice(data);
            joined = buffer;
            &joined[..]
        };
        let mut pos = 0;
        while pos + TS_PACKET_LEN <= data.len() {
            if data[pos] != SYNC_BYTE {
                let next =
                    memchr::memchr(SYNC_BYTE, &data[pos + 1..]).map_or(data.len(), |i| pos + 1 + i);
                self.skipped_bytes += (next - pos) as u64;
                pos = next;
                continue;
            }
            // Errors here concern one PES (too large, bad header), already dropped.
            let _ = self.packet(&data[pos..pos + TS_PACKET_LEN], &mut out);
            pos += TS_PACKET_LEN;
        }
        self.partial.extend_from_slice(&data[pos..]);
        out
    }

    fn push_aligned(&mut self, mut data: &[u8]) -> Result<Vec<PesPacket>, TsDemuxError> {
        let mut out = Vec::new();
        if !self.partial.is_empty() {
            let need = TS_PACKET_LEN - self.partial.len();
            let take = need.min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < TS_PACKET_LEN {
                return Ok(out);
            }
            let packet = std::mem::take(&mut self.partial);
            self.packet(&packet, &mut out)?;
        }
        let mut packets = data.chunks_exact(TS_PACKET_LEN);
        for packet in &mut packets {
            self.packet(packet, &mut out)?;
        }
        self.partial.extend_from_slice(packets.remainder());
        Ok(out)
    }

    /// The input ended: the PES packets still open are complete.
    pub fn flush(&mut self) -> Vec<PesPacket> {
        let mut pids: Vec<u16> = self.pes.keys().copied().collect();
        pids.sort_unstable();
        pids.into_iter()
            .filter_map(|pid| self.finish(pid).ok().flatten())
            .collect()
    }

    fn packet(&mut self, packet: &[u8], out: &mut Vec<PesPacket>) -> Result<(), TsDemuxError> {
        if packet[0] != SYNC_BYTE {
            return Err(TsDemuxError::LostSync(packet[0]));
        }
        let error = packet[1] & 0x80 != 0;
        let unit_start = packet[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([packet[1] & 0x1F, packet[2]]);
        let control = (packet[3] >> 4) & 0x3;
        if error || control & 0x1 == 0 {
            return Ok(());
        }
        let mut payload = &packet[4..];
        if control & 0x2 != 0 {
            let len = payload[0] as usize;
            let Some(rest) = payload.get(1 + len..) else {
                return Ok(());
            };
            payload = rest;
        }
        if pid == 0 {
            self.pat(payload, unit_start);
        } else if Some(pid) == self.pmt_pid {
            self.pmt(payload, unit_start)?;
        } else if self.pes.contains_key(&pid) {
            let counter = packet[3] & 0x0F;
            if self.network && !self.continuous(pid, counter) {
                return Ok(());
            }
            if unit_start && let Some(done) = self.finish(pid)? {
                out.push(done);
            }
            let Some(buffer) = self.pes.get_mut(&pid) else {
                return Ok(());
            };
            if unit_start {
                buffer.started = true;
            }
            if buffer.started {
                if buffer.bytes.len() + payload.len() > MAX_PES_BYTES {
                    buffer.bytes.clear();
                    buffer.started = false;
                    return Err(TsDemuxError::PesTooLarge { pid });
                }
                buffer.bytes.extend_from_slice(payload);
            }
        }
        Ok(())
    }

    /// Network mode: whether a payload packet with this counter continues its PID's PES.
    /// A repeated counter is a duplicate (skipped); a gap drops the PES being gathered,
    /// so a damaged frame is never passed on.
    fn continuous(&mut self, pid: u16, counter: u8) -> bool {
        let Some(buffer) = self.pes.get_mut(&pid) else {
            return false;
        };
        let last = buffer.counter.replace(counter);
        match last {
            Some(last) if last == counter => false,
            Some(last) if (last + 1) & 0x0F != counter => {
                if buffer.started {
                    self.broken_pes += 1;
                }
                buffer.bytes.clear();
                buffer.started = false;
                true
            }
            _ => true,
        }
    }

    /// A PSI section that starts in this packet and fits in it (FFmpeg's PAT and PMT
    /// do); its CRC checked. Sections spread over packets are not needed here.
    fn section(payload: &[u8], unit_start: bool) -> Option<&[u8]> {
        if !unit_start {
            return None;
        }
        let pointer = *payload.first()? as usize;
        let section = payload.get(1 + pointer..)?;
        let length = (usize::from(*section.get(1)? & 0x0F) << 8) | usize::from(*section.get(2)?);
        let section = section.get(..3 + length)?;
        (length >= 9 && MPEG_CRC.checksum(section) == 0).then_some(&section[..section.len() - 4])
    }

    fn pat(&mut self, payload: &[u8], unit_start: bool) {
        let Some(section) = Self::section(payload, unit_start) else {
            return;
        };
        if section[0] != 0x00 {
            return;
        }
        self.pmt_pid = section[8..]
            .chunks_exact(4)
            .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
            .map(|e| u16::from_be_bytes([e[2] & 0x1F, e[3]]));
    }

    fn pmt(&mut self, payload: &[u8], unit_start: bool) -> Result<(), TsDemuxError> {
        let Some(section) = Self::section(payload, unit_start) else {
            return Ok(());
        };
        if section[0] != 0x02 || section.len() < 12 {
            return Ok(());
        }
        let info_len = (usize::from(section[10] & 0x0F) << 8) | usize::from(section[11]);
        let mut entries = section.get(12 + info_len..).unwrap_or_default();
        let mut streams = Vec::new();
        while let [stream_type, pid_hi, pid_lo, len_hi, len_lo, rest @ ..] = entries {
            if streams.len() == MAX_STREAMS {
                return Err(TsDemuxError::TooManyStreams);
            }
            let es_info = (usize::from(len_hi & 0x0F) << 8) | usize::from(*len_lo);
            streams.push(ElementaryStream {
                pid: u16::from_be_bytes([pid_hi & 0x1F, *pid_lo]),
                stream_type: *stream_type,
                registration: registration(rest.get(..es_info).unwrap_or(rest)),
            });
            entries = rest.get(es_info..).unwrap_or_default();
        }
        if streams != self.streams {
            self.pes = streams
                .iter()
                .map(|s| {
                    let buffer = PesBuffer {
                        stream_type: s.stream_type,
                        ..PesBuffer::default()
                    };
                    (s.pid, buffer)
                })
                .collect();
            self.streams = streams;
        }
        Ok(())
    }

    /// Parses the buffered PES of `pid`, if one is open.
    fn finish(&mut self, pid: u16) -> Result<Option<PesPacket>, TsDemuxError> {
        let Some(buffer) = self.pes.get_mut(&pid) else {
            return Ok(None);
        };
        if !buffer.started || buffer.bytes.is_empty() {
            return Ok(None);
        }
        buffer.started = false;
        let mut bytes = buffer.bytes.split().freeze();
        let bad = TsDemuxError::BadPesHeader { pid };
        if bytes.len() < 9 || bytes[..3] != [0, 0, 1] {
            return Err(bad);
        }
        let flags = bytes[7] >> 6;
        let header_len = 9 + usize::from(bytes[8]);
        if bytes.len() < header_len {
            return Err(bad);
        }
        let pts = (flags & 0x2 != 0)
            .then(|| bytes.get(9..14).map(timestamp))
            .flatten();
        let dts = (flags == 0x3)
            .then(|| bytes.get(14..19).map(timestamp))
            .flatten()
            .or(pts);
        // PES_packet_length is 0 (unbounded) for video; for audio it bounds the payload.
        let declared = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        if declared != 0 && 6 + declared < bytes.len() {
            bytes.truncate(6 + declared);
        }
        // A PES_packet_length shorter than its own header: damaged.
        if bytes.len() < header_len {
            return Err(bad);
        }
        let data = bytes.split_off(header_len);
        Ok(Some(PesPacket {
            pid,
            stream_type: buffer.stream_type,
            pts,
            dts,
            data,
        }))
    }
}

/// A 33-bit PTS or DTS from its 5 bytes.
fn timestamp(b: &[u8]) -> u64 {
    (u64::from(b[0] >> 1 & 0x07) << 30)
        | (u64::from(b[1]) << 22)
        | (u64::from(b[2] >> 1) << 15)
        | (u64::from(b[3]) << 7)
        | u64::from(b[4] >> 1)
}

/// Extends 33-bit TS timestamps to the 64-bit timeline of a reference: each value is
/// taken as the nearest one to the previous, so FFmpeg's output comes back on the same
/// unwrapped clock as the frames that went in, across the 26.5-hour wrap.
#[derive(Debug, Clone, Copy)]
pub struct Unwrap33 {
    last: i64,
}

impl Unwrap33 {
    const MODULUS: i64 = 1 << 33;

    /// `reference`: an unwrapped time near the first value to come.
    pub fn new(reference: i64) -> Self {
        Self { last: reference }
    }

    pub fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw as i64) & (Self::MODULUS - 1);
        let mut step = (raw - self.last.rem_euclid(Self::MODULUS)).rem_euclid(Self::MODULUS);
        if step >= Self::MODULUS / 2 {
            step -= Self::MODULUS;
        }
        self.last += step;
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::frame::{AudioFrame, Frame, VideoForm, VideoFrame};
    use crate::media::ts::{PID_AUDIO, PID_VIDEO, TsMuxer};

    fn muxed(frames: &[Frame]) -> Vec<u8> {
        let mut muxer = TsMuxer::new(true, true);
        let mut out = Vec::new();
        for f in frames {
            muxer.write_frame(f, &mut out).unwrap();
        }
        out
    }

    fn video(dts: i64, key: bool, len: usize) -> Frame {
        let mut data = vec![
            0,
            0,
            0,
            1,
            0x09,
            0xF0,
            0,
            0,
            0,
            1,
            if key { 0x65 } else { 0x41 },
        ];
        data.resize(len, 0xAB);
        Frame::Video(VideoFrame {
            dts,
            pts: dts + 6000,
            keyframe: key,
            data: data.into(),
            form: VideoForm::AnnexB,
        })
    }

    fn audio(pts: i64) -> Frame {
        Frame::Audio(AudioFrame {
            pts,
            data: vec![0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC, 1, 2, 3].into(),
        })
    }

    #[test]
    fn kawa_own_ts_comes_back_frame_for_frame() {
        let frames = [
            video(90_000, true, 5000),
            audio(90_000),
            video(93_000, false, 300),
            audio(91_920),
            video(96_000, false, 40),
        ];
        let ts = muxed(&frames);
        let mut demuxer = TsDemuxer::new();
        // Odd piece sizes: packets split across pushes.
        let mut pes = Vec::new();
        for piece in ts.chunks(100) {
            pes.extend(demuxer.push(piece).unwrap());
        }
        pes.extend(demuxer.flush());
        assert_eq!(
            demuxer.streams(),
            [
                ElementaryStream {
                    pid: PID_VIDEO,
                    stream_type: STREAM_TYPE_H264,
                    registration: None,
                },
                ElementaryStream {
                    pid: PID_AUDIO,
                    stream_type: STREAM_TYPE_ADTS_AAC,
                    registration: None,
                }
            ]
        );
        let mut videos: Vec<&PesPacket> = pes.iter().filter(|p| p.pid == PID_VIDEO).collect();
        let audios: Vec<&PesPacket> = pes.iter().filter(|p| p.pid == PID_AUDIO).collect();
        assert_eq!((videos.len(), audios.len()), (3, 2));
        for (packet, frame) in videos.drain(..).zip(frames.iter().step_by(2)) {
            let Frame::Video(v) = frame else {
                unreachable!()
            };
            assert_eq!(packet.dts, Some(v.dts as u64));
            assert_eq!(packet.pts, Some(v.pts as u64));
            assert_eq!(packet.data, v.data);
        }
        assert_eq!(audios[1].pts, Some(91_920));
        assert_eq!(audios[1].dts, Some(91_920));
        assert_eq!(audios[1].data, frames[3].data());
    }

    #[test]
    fn hostile_streams_get_errors_not_panics() {
        let mut demuxer = TsDemuxer::new();
        assert_eq!(
            demuxer.push(&[0x48; 188]),
            Err(TsDemuxError::LostSync(0x48))
        );
        // A PES that never ends is cut at the cap.
        let ts = muxed(&[video(0, true, 200)]);
        let mut demuxer = TsDemuxer::new();
        demuxer.push(&ts).unwrap();
        let mut body = [0xFFu8; 188];
        body[..4].copy_from_slice(&[0x47, (PID_VIDEO >> 8) as u8, PID_VIDEO as u8, 0x10]);
        let result = (0..MAX_PES_BYTES / 184 + 2).try_for_each(|_| demuxer.push(&body).map(drop));
        assert_eq!(result, Err(TsDemuxError::PesTooLarge { pid: PID_VIDEO }));
        // Garbage after a valid start: errors or nothing, never a panic.
        for n in 0..=255u8 {
            let mut packet = [n; 188];
            packet[0] = 0x47;
            let _ = demuxer.push(&packet);
        }
    }

    #[test]
    fn timestamps_unwrap_across_the_33_bit_wrap() {
        let modulus = 1i64 << 33;
        let mut u = Unwrap33::new(3 * modulus - 90_000);
        assert_eq!(u.unwrap((modulus - 45_000) as u64), 3 * modulus - 45_000);
        assert_eq!(u.unwrap(45_000), 3 * modulus + 45_000);
        assert_eq!(u.unwrap((modulus - 3000) as u64), 3 * modulus - 3000);
        let mut fresh = Unwrap33::new(1_000);
        assert_eq!(fresh.unwrap(500), 500);
    }
}
