//! Enhanced RTMP video tags (veovera E-RTMP v1 and v2): a FourCC names the codec
//! (`avc1`, `hvc1`, `av01`, ...), the packet type says what follows, ModEx prefixes may
//! come first, and a v2 multitrack tag carries one or more tracks. OBS 29.1+ and FFmpeg
//! 6.1+ send these for HEVC and AV1; OBS 30.2+ may add tracks.
//!
//! Pure and borrowing: the tag in, the track-0 packet (or the first track's) out. Every
//! length read is checked against the tag; ModEx prefixes are bounded.

use super::flv::{FlvError, VideoCodec};

/// Bit 7 of the first byte: an enhanced header follows.
pub const EX_HEADER: u8 = 0x80;
/// ModEx prefixes one tag may carry (the spec defines one kind, a nanosecond offset).
const MAX_MOD_EX: usize = 8;

pub const FOURCC_AVC: [u8; 4] = *b"avc1";
pub const FOURCC_HEVC: [u8; 4] = *b"hvc1";
pub const FOURCC_AV1: [u8; 4] = *b"av01";

mod packet_type {
    pub const SEQUENCE_START: u8 = 0;
    pub const CODED_FRAMES: u8 = 1;
    pub const SEQUENCE_END: u8 = 2;
    pub const CODED_FRAMES_X: u8 = 3;
    pub const METADATA: u8 = 4;
    pub const MPEG2TS_SEQUENCE_START: u8 = 5;
    pub const MULTITRACK: u8 = 6;
    pub const MOD_EX: u8 = 7;
}

/// AvMultitrackType; 1 (ManyTracks: one FourCC, tracks with sizes) lies between these.
mod multitrack {
    pub const ONE_TRACK: u8 = 0;
    pub const MANY_TRACKS_MANY_CODECS: u8 = 2;
}

/// FrameType 5: a command frame (no picture).
const FRAME_TYPE_COMMAND: u8 = 5;

/// What one track's part of an enhanced video tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExPacket<'a> {
    /// The decoder configuration record (avcC, hvcC or av1C contents, no box header).
    SequenceStart(&'a [u8]),
    /// One access unit: length-prefixed NAL units (AVC, HEVC) or OBUs (AV1).
    Frame {
        keyframe: bool,
        /// PTS - DTS in milliseconds (0 where the codec or CodedFramesX has none).
        composition_time_ms: i32,
        data: &'a [u8],
    },
    SequenceEnd,
    /// Metadata (colour info), command frames, an MPEG-2 TS descriptor: nothing to pass on.
    Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExVideoTag<'a> {
    pub fourcc: [u8; 4],
    /// The track (0 outside multitrack tags).
    pub track: u8,
    pub packet: ExPacket<'a>,
}

struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FlvError> {
        if self.data.len() < n {
            return Err(FlvError::Truncated {
                what,
                need: n,
                have: self.data.len(),
            });
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FlvError> {
        Ok(self.take(1, what)?[0])
    }

    fn u24(&mut self, what: &'static str) -> Result<usize, FlvError> {
        let b = self.take(3, what)?;
        Ok((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn fourcc(&mut self) -> Result<[u8; 4], FlvError> {
        let b = self.take(4, "enhanced video FourCC")?;
        Ok([b[0], b[1], b[2], b[3]])
    }
}

/// Parses an enhanced video tag (its first byte has [`EX_HEADER`] set).
pub fn parse(data: &[u8]) -> Result<ExVideoTag<'_>, FlvError> {
    let mut r = Reader { data };
    let first = r.u8("enhanced video tag")?;
    let frame_type = (first >> 4) & 0x07;
    let mut kind = first & 0x0F;
    let mut mod_ex = 0;
    while kind == packet_type::MOD_EX {
        mod_ex += 1;
        if mod_ex > MAX_MOD_EX {
            return Err(FlvError::BadTag {
                offset: 0,
                reason: "more ModEx prefixes than any encoder sends",
            });
        }
        let mut size = usize::from(r.u8("ModEx size")?) + 1;
        if size == 256 {
            let b = r.take(2, "ModEx size")?;
            size = usize::from(u16::from_be_bytes([b[0], b[1]])) + 1;
        }
        // The one ModEx kind defined (a nanosecond timestamp offset) is below the
        // millisecond clock Kawa keeps; it is skipped.
        r.take(size, "ModEx data")?;
        kind = r.u8("ModEx type")? & 0x0F;
    }
    if frame_type == FRAME_TYPE_COMMAND && kind != packet_type::METADATA {
        return Ok(ExVideoTag {
            fourcc: [0; 4],
            track: 0,
            packet: ExPacket::Ignored,
        });
    }
    if kind != packet_type::MULTITRACK {
        let fourcc = r.fourcc()?;
        let packet = packet(kind, frame_type, fourcc, r.data)?;
        return Ok(ExVideoTag {
            fourcc,
            track: 0,
            packet,
        });
    }
    let b = r.u8("multitrack type")?;
    let (layout, kind) = (b >> 4, b & 0x0F);
    if kind == packet_type::MULTITRACK {
        return Err(FlvError::BadTag {
            offset: 0,
            reason: "a multitrack packet inside a multitrack packet",
        });
    }
    if layout > multitrack::MANY_TRACKS_MANY_CODECS {
        return Err(FlvError::BadTag {
            offset: 0,
            reason: "unknown multitrack type",
        });
    }
    let shared = if layout == multitrack::MANY_TRACKS_MANY_CODECS {
        None
    } else {
        Some(r.fourcc()?)
    };
    // Track 0 if the tag has it, else the first: Kawa packages track 0 only.
    let mut first_track = None;
    while !r.data.is_empty() {
        let fourcc = match shared {
            Some(cc) => cc,
            None => r.fourcc()?,
        };
        let track = r.u8("track id")?;
        let body = if layout == multitrack::ONE_TRACK {
            std::mem::take(&mut r.data)
        } else {
            let size = r.u24("track size")?;
            r.take(size, "track")?
        };
        let parsed = ExVideoTag {
            fourcc,
            track,
            packet: packet(kind, frame_type, fourcc, body)?,
        };
        if track == 0 {
            return Ok(parsed);
        }
        first_track.get_or_insert(parsed);
    }
    first_track.ok_or(FlvError::Truncated {
        what: "multitrack tag",
        need: 1,
        have: 0,
    })
}

fn packet(
    kind: u8,
    frame_type: u8,
    fourcc: [u8; 4],
    body: &[u8],
) -> Result<ExPacket<'_>, FlvError> {
    Ok(match kind {
        packet_type::SEQUENCE_START => ExPacket::SequenceStart(body),
        packet_type::CODED_FRAMES if has_composition_time(fourcc) => {
            let mut r = Reader { data: body };
            let b = r.take(3, "composition time")?;
            ExPacket::Frame {
                keyframe: frame_type == 1,
                composition_time_ms: i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8,
                data: r.data,
            }
        }
        packet_type::CODED_FRAMES | packet_type::CODED_FRAMES_X => ExPacket::Frame {
            keyframe: frame_type == 1,
            composition_time_ms: 0,
            data: body,
        },
        packet_type::SEQUENCE_END => ExPacket::SequenceEnd,
        packet_type::METADATA | packet_type::MPEG2TS_SEQUENCE_START => ExPacket::Ignored,
        _ => {
            return Err(FlvError::BadTag {
                offset: 0,
                reason: "unknown enhanced video packet type",
            });
        }
    })
}

/// Only codecs with B-frames in RTMP's model carry a composition time (E-RTMP §
/// "CodedFrames"): AVC, HEVC, VVC.
fn has_composition_time(fourcc: [u8; 4]) -> bool {
    matches!(&fourcc, b"avc1" | b"hvc1" | b"vvc1")
}

/// The codec as an error names it, for FourCCs Kawa does not package yet.
pub fn unsupported(fourcc: [u8; 4]) -> FlvError {
    FlvError::UnsupportedVideoCodec(VideoCodec::FourCc(fourcc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{FlvFileReader, TagKind};

    fn video_tags(file: &[u8]) -> Vec<Vec<u8>> {
        FlvFileReader::new(file)
            .unwrap()
            .map(Result::unwrap)
            .filter(|t| t.kind == TagKind::Video)
            .map(|t| t.body.to_vec())
            .collect()
    }

    #[test]
    fn ffmpeg_hevc_tags_parse_to_a_record_then_frames() {
        // FFmpeg 9 + x265, 1 s at 25 fps, B-frames (tests/fixtures/make.sh).
        let tags = video_tags(include_bytes!("../../tests/fixtures/hevc_aac.flv"));
        let parsed: Vec<ExVideoTag<'_>> = tags.iter().map(|t| parse(t).unwrap()).collect();
        let ExPacket::SequenceStart(record) = &parsed[0].packet else {
            panic!("{:?}", parsed[0]);
        };
        assert_eq!(parsed[0].fourcc, FOURCC_HEVC);
        // hvcC: configurationVersion 1.
        assert_eq!(record[0], 1);
        let frames: Vec<(bool, i32)> = parsed
            .iter()
            .filter_map(|t| match t.packet {
                ExPacket::Frame {
                    keyframe,
                    composition_time_ms,
                    ..
                } => Some((keyframe, composition_time_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 25);
        assert!(frames[0].0, "the first frame is a keyframe");
        assert!(
            frames.iter().any(|f| f.1 > 0),
            "B-frames: composition times"
        );
    }

    #[test]
    fn ffmpeg_av1_tags_have_no_composition_time() {
        let tags = video_tags(include_bytes!("../../tests/fixtures/av1.flv"));
        let parsed: Vec<ExVideoTag<'_>> = tags.iter().map(|t| parse(t).unwrap()).collect();
        let ExPacket::SequenceStart(record) = &parsed[0].packet else {
            panic!("{:?}", parsed[0]);
        };
        assert_eq!(parsed[0].fourcc, FOURCC_AV1);
        // av1C: marker 1, version 1.
        assert_eq!(record[0], 0x81);
        let frames: Vec<&[u8]> = parsed
            .iter()
            .filter_map(|t| match t.packet {
                ExPacket::Frame {
                    composition_time_ms: 0,
                    data,
                    ..
                } => Some(data),
                ExPacket::Frame { .. } => panic!("AV1 with a composition time"),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 25);
        // Each starts with a temporal delimiter OBU (type 2, no payload).
        assert!(frames.iter().all(|f| f.starts_with(&[0x12, 0x00])));
    }

    /// A legacy AVC tag rewritten in each enhanced form gives the same packet.
    #[test]
    fn every_enhanced_form_of_an_avc_tag_reads_the_same() {
        let cts = [0x00, 0x00, 0x50];
        let nalus = [0, 0, 0, 2, 0x65, 0x88];
        let mut coded = vec![0x91];
        coded.extend_from_slice(b"avc1");
        coded.extend_from_slice(&cts);
        coded.extend_from_slice(&nalus);
        let expected = ExVideoTag {
            fourcc: FOURCC_AVC,
            track: 0,
            packet: ExPacket::Frame {
                keyframe: true,
                composition_time_ms: 80,
                data: &nalus,
            },
        };
        assert_eq!(parse(&coded).unwrap(), expected);
        // A ModEx prefix (a nanosecond offset) first.
        let mut mod_ex = vec![0x97, 2, 0, 0, 7, 0x01];
        mod_ex.extend_from_slice(b"avc1");
        mod_ex.extend_from_slice(&cts);
        mod_ex.extend_from_slice(&nalus);
        assert_eq!(parse(&mod_ex).unwrap(), expected);
        // Multitrack, one track (0).
        let mut one = vec![0x96, 0x01];
        one.extend_from_slice(b"avc1");
        one.push(0);
        one.extend_from_slice(&cts);
        one.extend_from_slice(&nalus);
        assert_eq!(parse(&one).unwrap(), expected);
        // Multitrack, two tracks, track 0 second.
        let mut many = vec![0x96, 0x11];
        many.extend_from_slice(b"avc1");
        for track in [1u8, 0] {
            many.push(track);
            many.extend_from_slice(&[0, 0, (cts.len() + nalus.len()) as u8]);
            many.extend_from_slice(&cts);
            many.extend_from_slice(&nalus);
        }
        assert_eq!(parse(&many).unwrap(), expected);
        // CodedFramesX: no composition time.
        let mut x = vec![0x93];
        x.extend_from_slice(b"avc1");
        x.extend_from_slice(&nalus);
        assert!(matches!(
            parse(&x).unwrap().packet,
            ExPacket::Frame {
                composition_time_ms: 0,
                ..
            }
        ));
    }

    #[test]
    fn hostile_tags_are_errors() {
        assert!(parse(&[0x90]).is_err());
        assert!(parse(&[0x96, 0x66]).is_err(), "multitrack in multitrack");
        let mut deep = vec![0x97];
        for _ in 0..20 {
            deep.extend_from_slice(&[0, 0, 0x07]);
        }
        assert!(parse(&deep).is_err(), "endless ModEx");
        let mut big = vec![0x96, 0x11];
        big.extend_from_slice(b"hvc1");
        big.extend_from_slice(&[1, 0xFF, 0xFF, 0xFF]);
        assert!(parse(&big).is_err(), "a track larger than its tag");
        // Metadata and commands are nothing to pass on.
        let mut meta = vec![0xD4];
        meta.extend_from_slice(b"hvc1");
        assert_eq!(parse(&meta).unwrap().packet, ExPacket::Ignored);
    }
}
