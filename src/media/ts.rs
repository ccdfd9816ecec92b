//! A small MPEG-TS muxer (ISO/IEC 13818-1) for one program of H.264 or HEVC and ADTS
//! AAC.
//!
//! Written here rather than taken from a crate: the Rust TS crates are demuxer-first or
//! leave PES packetization, PCR and stuffing to the caller, which is most of the work;
//! this file is that work and nothing more, and writes straight into the caller's buffer
//! with one copy of each payload (the remux benchmark depends on it).
//!
//! Details players care about: PAT/PMT before every keyframe so each segment stands
//! alone; the random-access indicator on keyframes; PCR on the first track, a little
//! behind DTS; DTS left out when it equals PTS; continuity counters per PID.

use crc::{CRC_32_MPEG_2, Crc};

use super::frame::{AudioFrame, Frame, VideoCodec, VideoForm, VideoFrame};
use super::time::TICKS_PER_SECOND;

pub const TS_PACKET_LEN: usize = 188;
const TS_PAYLOAD_LEN: usize = TS_PACKET_LEN - 4;
const SYNC_BYTE: u8 = 0x47;

const PID_PAT: u16 = 0x0000;
const PID_PMT: u16 = 0x1000;
pub const PID_VIDEO: u16 = 0x0100;
pub const PID_AUDIO: u16 = 0x0101;

const STREAM_TYPE_H264: u8 = 0x1B;
const STREAM_TYPE_HEVC: u8 = 0x24;
const STREAM_TYPE_ADTS_AAC: u8 = 0x0F;
const STREAM_ID_VIDEO: u8 = 0xE0;
const STREAM_ID_AUDIO: u8 = 0xC0;

/// PCR trails the DTS of the packet that carries it by this much (100 ms), so every
/// frame arrives before its decode time in the decoder model.
const PCR_DELAY: i64 = TICKS_PER_SECOND / 10;
/// Audio-only streams repeat PAT/PMT at least this often.
const PSI_INTERVAL: i64 = TICKS_PER_SECOND;
/// PTS, DTS and PCR base are 33-bit counters.
const TIMESTAMP_MASK: i64 = (1 << 33) - 1;

const MPEG_CRC: Crc<u32> = Crc::<u32>::new(&CRC_32_MPEG_2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error("the muxer was created without a {0} track")]
    NoSuchTrack(&'static str),
    #[error("a video frame in sample form (TS carries Annex B: `media::sample::annexb_frame`)")]
    SampleForm,
}

/// Muxes frames of one program into 188-byte TS packets.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    video: bool,
    video_stream_type: u8,
    audio: bool,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    last_psi: Option<i64>,
}

impl TsMuxer {
    /// A muxer for a program with the given tracks (at least one should be present).
    pub fn new(video: bool, audio: bool) -> Self {
        Self {
            video,
            video_stream_type: STREAM_TYPE_H264,
            audio,
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
            last_psi: None,
        }
    }

    /// The video track carries `codec` (H.264 unless told). AV1 has no TS stream type
    /// FFmpeg 5.1 reads, so no AV1 plan sends it here (`TranscodePlan::new`).
    pub fn with_video_codec(mut self, codec: VideoCodec) -> Self {
        self.video_stream_type = match codec {
            VideoCodec::Hevc => STREAM_TYPE_HEVC,
            VideoCodec::Avc | VideoCodec::Av1 => STREAM_TYPE_H264,
        };
        self
    }

    fn pcr_pid(&self) -> u16 {
        if self.video { PID_VIDEO } else { PID_AUDIO }
    }

    pub fn write_frame(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<(), TsError> {
        match frame {
            Frame::Video(v) => self.write_video(v, out),
            Frame::Audio(a) => self.write_audio(a, out),
        }
    }

    pub fn write_video(&mut self, frame: &VideoFrame, out: &mut Vec<u8>) -> Result<(), TsError> {
        if !self.video {
            return Err(TsError::NoSuchTrack("video"));
        }
        if frame.form != VideoForm::AnnexB {
            return Err(TsError::SampleForm);
        }
        if frame.keyframe || self.last_psi.is_none() {
            self.write_psi(frame.dts, out);
        }
        let dts = (frame.dts != frame.pts).then_some(frame.dts);
        let mut cc = self.cc_video;
        write_pes(
            out,
            Pes {
                pid: PID_VIDEO,
                stream_id: STREAM_ID_VIDEO,
                pts: frame.pts,
                dts,
                pcr: Some(frame.dts - PCR_DELAY),
                random_access: frame.keyframe,
                bounded_length: false,
            },
            &frame.data,
            &mut cc,
        );
        self.cc_video = cc;
        Ok(())
    }

    pub fn write_audio(&mut self, frame: &AudioFrame, out: &mut Vec<u8>) -> Result<(), TsError> {
        if !self.audio {
            return Err(TsError::NoSuchTrack("audio"));
        }
        let audio_only = !self.video;
        let psi_due = match self.last_psi {
            None => true,
            Some(at) => audio_only && frame.pts - at >= PSI_INTERVAL,
        };
        if psi_due {
            self.write_psi(frame.pts, out);
        }
        let mut cc = self.cc_audio;
        write_pes(
            out,
            Pes {
                pid: PID_AUDIO,
                stream_id: STREAM_ID_AUDIO,
                pts: frame.pts,
                dts: None,
                pcr: audio_only.then_some(frame.pts - PCR_DELAY),
                // Every AAC frame can start playback.
                random_access: audio_only,
                bounded_length: true,
            },
            &frame.data,
            &mut cc,
        );
        self.cc_audio = cc;
        Ok(())
    }

    fn write_psi(&mut self, at: i64, out: &mut Vec<u8>) {
        self.last_psi = Some(at);
        // PAT: one program (number 1) whose PMT is on PID_PMT.
        let pmt_pid = PID_PMT.to_be_bytes();
        let pat = [
            0x00,
            0x01,
            0xC1,
            0x00,
            0x00,
            0x00,
            0x01,
            0xE0 | pmt_pid[0],
            pmt_pid[1],
        ];
        write_section(out, PID_PAT, 0x00, &pat, &mut self.cc_pat);

        let pcr = self.pcr_pid().to_be_bytes();
        let mut pmt = Vec::with_capacity(19);
        // program_number 1, version 0, current; PCR PID; no program descriptors.
        pmt.extend_from_slice(&[
            0x00,
            0x01,
            0xC1,
            0x00,
            0x00,
            0xE0 | pcr[0],
            pcr[1],
            0xF0,
            0x00,
        ]);
        for (present, stream_type, pid) in [
            (self.video, self.video_stream_type, PID_VIDEO),
            (self.audio, STREAM_TYPE_ADTS_AAC, PID_AUDIO),
        ] {
            if present {
                let pid = pid.to_be_bytes();
                pmt.extend_from_slice(&[stream_type, 0xE0 | pid[0], pid[1], 0xF0, 0x00]);
            }
        }
        write_section(out, PID_PMT, 0x02, &pmt, &mut self.cc_pmt);
    }
}

/// A PSI section (PAT or PMT) in one packet: table id, syntax header, body, CRC.
fn write_section(out: &mut Vec<u8>, pid: u16, table_id: u8, body: &[u8], cc: &mut u8) {
    let start = out.len();
    let pid_bytes = pid.to_be_bytes();
    out.extend_from_slice(&[
        SYNC_BYTE,
        0x40 | pid_bytes[0],
        pid_bytes[1],
        0x10 | *cc,
        0x00,
    ]);
    *cc = (*cc + 1) & 0x0F;
    let section_start = out.len();
    let section_length = body.len() + 4; // + CRC
    out.extend_from_slice(&[
        table_id,
        0xB0 | (section_length >> 8) as u8,
        section_length as u8,
    ]);
    out.extend_from_slice(body);
    let crc = MPEG_CRC.checksum(&out[section_start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out.resize(start + TS_PACKET_LEN, 0xFF);
}

struct Pes {
    pid: u16,
    stream_id: u8,
    pts: i64,
    dts: Option<i64>,
    pcr: Option<i64>,
    random_access: bool,
    /// Audio PES packets carry their length; video ones may be longer than 64 KiB and
    /// say 0 ("unbounded"), which TS allows for video.
    bounded_length: bool,
}

/// 5-byte PTS/DTS field (ISO/IEC 13818-1 §2.4.3.7) with its 4-bit prefix.
fn timestamp_field(prefix: u8, ts: i64) -> [u8; 5] {
    let t = (ts & TIMESTAMP_MASK) as u64;
    [
        (prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1,
        (t >> 22) as u8,
        (((t >> 15) as u8) << 1) | 1,
        (t >> 7) as u8,
        ((t as u8) << 1) | 1,
    ]
}

/// 6-byte PCR field: 33-bit base, 6 reserved bits, 9-bit extension (0).
fn pcr_field(pcr: i64) -> [u8; 6] {
    let base = (pcr.max(0) & TIMESTAMP_MASK) as u64;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base as u8 & 1) << 7) | 0x7E,
        0x00,
    ]
}

fn write_pes(out: &mut Vec<u8>, pes: Pes, payload: &[u8], cc: &mut u8) {
    // PES header: start code, stream id, length, flags, header length, PTS, [DTS].
    let mut header = [0u8; 19];
    let header_data_len: usize = if pes.dts.is_some() { 10 } else { 5 };
    let header_len = 9 + header_data_len;
    let pes_len = 3 + header_data_len + payload.len();
    let length_field = if pes.bounded_length && pes_len <= 0xFFFF {
        pes_len as u16
    } else {
        0
    };
    header[..6].copy_from_slice(&[
        0,
        0,
        1,
        pes.stream_id,
        (length_field >> 8) as u8,
        length_field as u8,
    ]);
    header[6] = 0x80; // '10' marker, not scrambled, no priority/alignment/copyright flags
    header[7] = if pes.dts.is_some() { 0xC0 } else { 0x80 };
    header[8] = header_data_len as u8;
    match pes.dts {
        Some(dts) => {
            header[9..14].copy_from_slice(&timestamp_field(0x3, pes.pts));
            header[14..19].copy_from_slice(&timestamp_field(0x1, dts));
        }
        None => header[9..14].copy_from_slice(&timestamp_field(0x2, pes.pts)),
    }
    let header = &header[..header_len];

    let total = header_len + payload.len();
    let packets = total.div_ceil(TS_PAYLOAD_LEN) + 1;
    out.reserve(packets * TS_PACKET_LEN);
    let pid = pes.pid.to_be_bytes();
    let mut written = 0;
    let mut first = true;
    while written < total {
        let remaining = total - written;
        // The first packet may need an adaptation field for PCR and random access.
        let flags_needed = first && (pes.pcr.is_some() || pes.random_access);
        let af_base = if flags_needed {
            2 + if pes.pcr.is_some() { 6 } else { 0 }
        } else {
            0
        };
        let (chunk, af_len) = if remaining >= TS_PAYLOAD_LEN - af_base {
            (TS_PAYLOAD_LEN - af_base, af_base)
        } else {
            // The last packet is padded with adaptation-field stuffing.
            (remaining, TS_PAYLOAD_LEN - remaining)
        };
        let control = if af_len > 0 { 0x30 } else { 0x10 };
        let pusi = if first { 0x40 } else { 0x00 };
        out.extend_from_slice(&[SYNC_BYTE, pusi | pid[0], pid[1], control | *cc]);
        *cc = (*cc + 1) & 0x0F;
        if af_len > 0 {
            let af_start = out.len();
            out.push((af_len - 1) as u8);
            if af_len > 1 {
                let mut flags = 0u8;
                if first && pes.random_access {
                    flags |= 0x40;
                }
                let pcr = if first { pes.pcr } else { None };
                if pcr.is_some() {
                    flags |= 0x10;
                }
                out.push(flags);
                if let Some(pcr) = pcr {
                    out.extend_from_slice(&pcr_field(pcr));
                }
                out.resize(af_start + af_len, 0xFF);
            }
        }
        // Copy `chunk` bytes of header ++ payload starting at `written`.
        let mut need = chunk;
        let mut at = written;
        if at < header_len {
            let n = need.min(header_len - at);
            out.extend_from_slice(&header[at..at + n]);
            need -= n;
            at += n;
        }
        if need > 0 {
            let from = at - header_len;
            out.extend_from_slice(&payload[from..from + need]);
        }
        written += chunk;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn packets(data: &[u8]) -> Vec<&[u8]> {
        assert_eq!(data.len() % TS_PACKET_LEN, 0);
        data.chunks(TS_PACKET_LEN).collect()
    }

    fn pid(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[1] & 0x1F, p[2]])
    }

    #[test]
    fn timestamp_field_matches_the_spec_layout() {
        // 0x1_2345_6789 with prefix 0010.
        assert_eq!(
            timestamp_field(0x2, 0x1_2345_6789),
            [0x29, 0x8D, 0x15, 0xCF, 0x13]
        );
        // Negative and >33-bit values wrap.
        assert_eq!(
            timestamp_field(0x2, -1),
            timestamp_field(0x2, TIMESTAMP_MASK)
        );
    }

    #[test]
    fn keyframe_gets_tables_pcr_and_random_access() {
        let mut mux = TsMuxer::new(true, true);
        let mut out = Vec::new();
        let frame = VideoFrame {
            dts: 90_000,
            pts: 93_600,
            keyframe: true,
            data: Bytes::from(vec![0xAB; 500]),
            form: VideoForm::AnnexB,
        };
        mux.write_video(&frame, &mut out).unwrap();
        let p = packets(&out);
        assert_eq!(pid(p[0]), PID_PAT);
        assert_eq!(pid(p[1]), PID_PMT);
        assert_eq!(pid(p[2]), PID_VIDEO);
        assert_eq!(p[2][1] & 0x40, 0x40, "payload unit start");
        assert_eq!(p[2][3] & 0x30, 0x30, "adaptation field present");
        assert_eq!(p[2][5] & 0x50, 0x50, "RAI and PCR flags");
        // PES header with PTS and DTS.
        let pes = &p[2][4 + 1 + p[2][4] as usize..];
        assert_eq!(&pes[..4], &[0, 0, 1, 0xE0]);
        assert_eq!(pes[7], 0xC0);
        // Continuity counters count per PID.
        let ccs: Vec<u8> = p[2..].iter().map(|p| p[3] & 0x0F).collect();
        assert_eq!(ccs, (0..ccs.len() as u8).collect::<Vec<_>>());
        // The CRC of each table checks out (CRC over section incl. CRC is 0).
        for table in &p[..2] {
            let len = (((table[6] & 0x0F) as usize) << 8) | table[7] as usize;
            assert_eq!(MPEG_CRC.checksum(&table[5..8 + len]), 0);
        }
    }

    #[test]
    fn equal_dts_is_left_out_and_short_frames_are_stuffed() {
        let mut mux = TsMuxer::new(true, false);
        let mut out = Vec::new();
        let frame = VideoFrame {
            dts: 0,
            pts: 0,
            keyframe: false,
            data: Bytes::from_static(&[1, 2, 3]),
            form: VideoForm::AnnexB,
        };
        mux.write_video(&frame, &mut out).unwrap();
        let p = packets(&out);
        let video = p[2];
        let af_len = video[4] as usize;
        let pes = &video[5 + af_len..];
        assert_eq!(pes[7], 0x80, "PTS only");
        assert_eq!(&pes[14..], &[1, 2, 3]);
        assert!(matches!(
            mux.write_audio(
                &AudioFrame {
                    pts: 0,
                    data: Bytes::new()
                },
                &mut out
            ),
            Err(TsError::NoSuchTrack("audio"))
        ));
    }

    #[test]
    fn audio_only_streams_repeat_tables_and_carry_pcr() {
        let mut mux = TsMuxer::new(false, true);
        let mut out = Vec::new();
        for i in 0..50 {
            let frame = AudioFrame {
                pts: i * 1920, // 21.3 ms at 90 kHz
                data: Bytes::from_static(&[0xFF, 0xF1, 0x50, 0x80, 0x01, 0x1F, 0xFC, 0x21]),
            };
            mux.write_audio(&frame, &mut out).unwrap();
        }
        let p = packets(&out);
        let pats = p.iter().filter(|p| pid(p) == PID_PAT).count();
        assert_eq!(pats, 2, "at 0 s and after 1 s");
        let audio = p.iter().find(|p| pid(p) == PID_AUDIO).unwrap();
        assert_eq!(audio[5] & 0x10, 0x10, "PCR on the audio PID");
    }
}
