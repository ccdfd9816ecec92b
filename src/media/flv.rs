//! FLV tag bodies as RTMP carries them (video message = FLV VIDEODATA, audio message =
//! FLV AUDIODATA), per the FLV spec v10.1 §E.4.2/§E.4.3, plus a reader for whole FLV
//! files (§E.2–E.3) used by `kawa tools remux`.
//!
//! Parsing borrows from the input: no copies until a frame is built.

use std::fmt;

use super::flv_ex::{self, ExPacket};
use super::frame::VideoCodec as Codec;

/// FLV VIDEODATA CodecID for AVC (H.264).
const CODEC_AVC: u8 = 7;
/// FLV AUDIODATA SoundFormat for AAC.
const SOUND_FORMAT_AAC: u8 = 10;
/// Enhanced RTMP: SoundFormat 9 announces an extended audio header with a FourCC.
const SOUND_FORMAT_EX_HEADER: u8 = 9;
/// Enhanced RTMP: the top bit of a video tag's first byte announces an extended header.
const VIDEO_EX_HEADER: u8 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("unsupported video codec: {0}")]
    UnsupportedVideoCodec(VideoCodec),
    #[error("unsupported audio codec: {0}")]
    UnsupportedAudioCodec(AudioCodec),
    #[error("unknown AVCPacketType {0}")]
    UnknownAvcPacketType(u8),
    #[error("unknown AACPacketType {0}")]
    UnknownAacPacketType(u8),
    #[error("not an FLV file (signature {0:02x?})")]
    NotFlv([u8; 3]),
    #[error("FLV tag at offset {offset}: {reason}")]
    BadTag { offset: usize, reason: &'static str },
}

/// A video codec Kawa does not take, named for the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// Legacy FLV CodecID (2 = Sorenson H.263, 4 = VP6, 12 = HEVC in some forks, ...).
    CodecId(u8),
    /// Enhanced RTMP FourCC (`hvc1`, `av01`, `vp09`, ...).
    FourCc([u8; 4]),
}

impl fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CodecId(id) => write!(f, "FLV codec id {id} (only 7, H.264, is supported)"),
            Self::FourCc(cc) => write!(
                f,
                "enhanced RTMP FourCC `{}` (Kawa takes avc1, hvc1 and av01)",
                // The peer's bytes: escaped, so they cannot forge a log line.
                cc.escape_ascii()
            ),
        }
    }
}

/// An audio codec Kawa does not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    SoundFormat(u8),
    FourCc([u8; 4]),
}

impl fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SoundFormat(id) => {
                write!(f, "FLV sound format {id} (only 10, AAC, is supported)")
            }
            Self::FourCc(cc) => write!(
                f,
                "enhanced RTMP FourCC `{}` (only AAC is supported)",
                // The peer's bytes: escaped, so they cannot forge a log line.
                cc.escape_ascii()
            ),
        }
    }
}

/// A parsed FLV video tag body carrying H.264, or over Enhanced RTMP HEVC or AV1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag<'a> {
    /// AVCPacketType 0 (or an enhanced SequenceStart): the decoder configuration record
    /// (avcC, hvcC or av1C contents).
    SequenceHeader(Codec, &'a [u8]),
    /// AVCPacketType 1 (or enhanced CodedFrames): one access unit of length-prefixed
    /// NAL units, or of OBUs for AV1.
    Nalus {
        codec: Codec,
        /// FrameType 1 ("key frame").
        keyframe: bool,
        /// Composition time offset in milliseconds: PTS = DTS + this. Signed 24 bits.
        composition_time_ms: i32,
        data: &'a [u8],
    },
    /// AVCPacketType 2.
    EndOfSequence,
    /// FrameType 5: a video info/command frame, no picture (or enhanced metadata).
    Command,
    /// An enhanced multitrack tag for a track other than 0: not packaged.
    OtherTrack(u8),
}

/// A parsed FLV audio tag body carrying AAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag<'a> {
    /// AACPacketType 0: an AudioSpecificConfig.
    SequenceHeader(&'a [u8]),
    /// AACPacketType 1: one raw AAC frame.
    Raw(&'a [u8]),
}

fn need(what: &'static str, data: &[u8], n: usize) -> Result<(), FlvError> {
    if data.len() < n {
        Err(FlvError::Truncated {
            what,
            need: n,
            have: data.len(),
        })
    } else {
        Ok(())
    }
}

/// Sign-extends a big-endian 24-bit value.
fn si24(b: [u8; 3]) -> i32 {
    i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8
}

impl<'a> VideoTag<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, FlvError> {
        need("video tag", data, 1)?;
        let first = data[0];
        if first & VIDEO_EX_HEADER != 0 {
            return Self::enhanced(data);
        }
        let frame_type = first >> 4;
        let codec_id = first & 0x0F;
        if codec_id != CODEC_AVC {
            return Err(FlvError::UnsupportedVideoCodec(VideoCodec::CodecId(
                codec_id,
            )));
        }
        if frame_type == 5 {
            return Ok(Self::Command);
        }
        need("AVC video tag", data, 5)?;
        let composition_time_ms = si24([data[2], data[3], data[4]]);
        let body = &data[5..];
        match data[1] {
            0 => Ok(Self::SequenceHeader(Codec::Avc, body)),
            1 => Ok(Self::Nalus {
                codec: Codec::Avc,
                keyframe: frame_type == 1,
                composition_time_ms,
                data: body,
            }),
            2 => Ok(Self::EndOfSequence),
            other => Err(FlvError::UnknownAvcPacketType(other)),
        }
    }
}

impl<'a> VideoTag<'a> {
    /// An enhanced RTMP tag: H.264 (`avc1`), HEVC (`hvc1`) and AV1 (`av01`) on track 0
    /// read as the legacy tag with their codec; other tracks are not packaged (OBS's
    /// extra renditions); other codecs are refused.
    fn enhanced(data: &'a [u8]) -> Result<Self, FlvError> {
        let tag = flv_ex::parse(data)?;
        if tag.track != 0 {
            return Ok(Self::OtherTrack(tag.track));
        }
        if tag.packet == ExPacket::Ignored {
            return Ok(Self::Command);
        }
        let codec = match tag.fourcc {
            flv_ex::FOURCC_AVC => Codec::Avc,
            flv_ex::FOURCC_HEVC => Codec::Hevc,
            flv_ex::FOURCC_AV1 => Codec::Av1,
            other => return Err(flv_ex::unsupported(other)),
        };
        match tag.packet {
            ExPacket::Ignored => Ok(Self::Command),
            ExPacket::SequenceStart(record) => Ok(Self::SequenceHeader(codec, record)),
            ExPacket::Frame {
                keyframe,
                composition_time_ms,
                data,
            } => Ok(Self::Nalus {
                codec,
                keyframe,
                composition_time_ms,
                data,
            }),
            ExPacket::SequenceEnd => Ok(Self::EndOfSequence),
        }
    }
}

impl<'a> AudioTag<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, FlvError> {
        need("audio tag", data, 1)?;
        let sound_format = data[0] >> 4;
        if sound_format == SOUND_FORMAT_EX_HEADER {
            need("enhanced audio tag", data, 5)?;
            let fourcc = [data[1], data[2], data[3], data[4]];
            return Err(FlvError::UnsupportedAudioCodec(AudioCodec::FourCc(fourcc)));
        }
        if sound_format != SOUND_FORMAT_AAC {
            return Err(FlvError::UnsupportedAudioCodec(AudioCodec::SoundFormat(
                sound_format,
            )));
        }
        need("AAC audio tag", data, 2)?;
        match data[1] {
            0 => Ok(Self::SequenceHeader(&data[2..])),
            1 => Ok(Self::Raw(&data[2..])),
            other => Err(FlvError::UnknownAacPacketType(other)),
        }
    }
}

/// What an FLV file tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

/// One tag of an FLV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTag<'a> {
    pub kind: TagKind,
    /// The 32-bit millisecond timestamp (24 bits plus the extension byte), as RTMP has it.
    pub timestamp_ms: u32,
    pub body: &'a [u8],
}

/// Iterates over the tags of an FLV file held in memory.
pub struct FlvFileReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// From the header's TypeFlags.
    pub has_audio: bool,
    pub has_video: bool,
}

const FLV_TAG_HEADER_LEN: usize = 11;

impl<'a> FlvFileReader<'a> {
    pub fn new(data: &'a [u8]) -> Result<Self, FlvError> {
        need("FLV header", data, 9)?;
        let signature = [data[0], data[1], data[2]];
        if &signature != b"FLV" {
            return Err(FlvError::NotFlv(signature));
        }
        let flags = data[4];
        let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
        if header_len < 9 || header_len > data.len() {
            return Err(FlvError::BadTag {
                offset: 5,
                reason: "header size out of range",
            });
        }
        Ok(Self {
            data,
            // Skip PreviousTagSize0 after the header.
            pos: header_len.saturating_add(4),
            has_audio: flags & 0x04 != 0,
            has_video: flags & 0x01 != 0,
        })
    }

    fn next_tag(&mut self) -> Result<Option<FileTag<'a>>, FlvError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Ok(None);
        }
        let offset = self.pos;
        need("FLV tag header", rest, FLV_TAG_HEADER_LEN)?;
        let tag_type = rest[0];
        if tag_type & 0x20 != 0 {
            return Err(FlvError::BadTag {
                offset,
                reason: "encrypted tags are not supported",
            });
        }
        let kind = match tag_type & 0x1F {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            18 => TagKind::Script,
            _ => {
                return Err(FlvError::BadTag {
                    offset,
                    reason: "unknown tag type",
                });
            }
        };
        let size = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
        let timestamp_ms = u32::from_be_bytes([rest[7], rest[4], rest[5], rest[6]]);
        let end = FLV_TAG_HEADER_LEN + size;
        need("FLV tag body", rest, end)?;
        let body = &rest[FLV_TAG_HEADER_LEN..end];
        // The trailing PreviousTagSize may be missing on the last tag of a cut file.
        self.pos = offset + (end + 4).min(rest.len());
        Ok(Some(FileTag {
            kind,
            timestamp_ms,
            body,
        }))
    }
}

impl<'a> Iterator for FlvFileReader<'a> {
    type Item = Result<FileTag<'a>, FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_tag() {
            Ok(Some(tag)) => Some(Ok(tag)),
            Ok(None) => None,
            Err(e) => {
                // Stop after an error: the position in a broken file means nothing.
                self.pos = self.data.len();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fourcc_from_the_peer_is_escaped_in_messages() {
        let video = VideoCodec::FourCc(*b"h\n\x1b[").to_string();
        let audio = AudioCodec::FourCc(*b"a\r\"x").to_string();
        assert!(video.contains(r"`h\n\x1b[`"), "{video}");
        assert!(audio.contains(r#"`a\r\"x`"#), "{audio}");
        assert!(!video.contains('\n') && !audio.contains('\r'));
    }

    #[test]
    fn avc_keyframe_with_composition_time() {
        let tag = [0x17, 0x01, 0x00, 0x00, 0x50, 0xAA];
        assert_eq!(
            VideoTag::parse(&tag).unwrap(),
            VideoTag::Nalus {
                codec: Codec::Avc,
                keyframe: true,
                composition_time_ms: 80,
                data: &[0xAA]
            }
        );
    }

    #[test]
    fn negative_composition_time_is_sign_extended() {
        let tag = [0x27, 0x01, 0xFF, 0xFF, 0xD8];
        let VideoTag::Nalus {
            keyframe,
            composition_time_ms,
            data,
            ..
        } = VideoTag::parse(&tag).unwrap()
        else {
            panic!("not NALUs")
        };
        assert!(!keyframe);
        assert_eq!(composition_time_ms, -40);
        assert!(data.is_empty());
    }

    #[test]
    fn sequence_header_and_end_of_sequence() {
        assert_eq!(
            VideoTag::parse(&[0x17, 0x00, 0, 0, 0, 1, 2]).unwrap(),
            VideoTag::SequenceHeader(Codec::Avc, &[1, 2])
        );
        assert_eq!(
            VideoTag::parse(&[0x17, 0x02, 0, 0, 0]).unwrap(),
            VideoTag::EndOfSequence
        );
        assert_eq!(VideoTag::parse(&[0x57, 0x00]).unwrap(), VideoTag::Command);
    }

    #[test]
    fn other_codecs_are_named_not_misparsed() {
        // Sorenson H.263 keyframe.
        assert_eq!(
            VideoTag::parse(&[0x12, 0, 0, 0, 0]),
            Err(FlvError::UnsupportedVideoCodec(VideoCodec::CodecId(2)))
        );
        // Enhanced RTMP sequence starts: IsExHeader | keyframe<<4 | PacketTypeSequenceStart.
        assert_eq!(
            VideoTag::parse(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]),
            Ok(VideoTag::SequenceHeader(Codec::Hevc, &[1, 2, 3]))
        );
        assert_eq!(
            VideoTag::parse(&[0x90, b'v', b'p', b'0', b'9'])
                .unwrap_err()
                .to_string(),
            "unsupported video codec: enhanced RTMP FourCC `vp09` (Kawa takes avc1, hvc1 and av01)"
        );
        // MP3.
        assert_eq!(
            AudioTag::parse(&[0x2F, 0xFF]),
            Err(FlvError::UnsupportedAudioCodec(AudioCodec::SoundFormat(2)))
        );
        assert_eq!(
            AudioTag::parse(&[0x90, b'O', b'p', b'u', b's']),
            Err(FlvError::UnsupportedAudioCodec(AudioCodec::FourCc(
                *b"Opus"
            )))
        );
    }

    #[test]
    fn truncated_tags_are_errors() {
        for bad in [&[][..], &[0x17][..], &[0x17, 0x01, 0x00][..]] {
            assert!(
                matches!(VideoTag::parse(bad), Err(FlvError::Truncated { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            AudioTag::parse(&[0xAF]),
            Err(FlvError::Truncated { .. })
        ));
        assert_eq!(
            VideoTag::parse(&[0x17, 9, 0, 0, 0]),
            Err(FlvError::UnknownAvcPacketType(9))
        );
        assert_eq!(
            AudioTag::parse(&[0xAF, 7]),
            Err(FlvError::UnknownAacPacketType(7))
        );
    }

    #[test]
    fn aac_tags() {
        assert_eq!(
            AudioTag::parse(&[0xAF, 0, 0x12, 0x10]).unwrap(),
            AudioTag::SequenceHeader(&[0x12, 0x10])
        );
        assert_eq!(
            AudioTag::parse(&[0xAF, 1, 0x21]).unwrap(),
            AudioTag::Raw(&[0x21])
        );
    }

    fn file(tags: &[(u8, u32, &[u8])]) -> Vec<u8> {
        let mut out = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for (kind, ts, body) in tags {
            let size = (body.len() as u32).to_be_bytes();
            let t = ts.to_be_bytes();
            out.extend_from_slice(&[
                *kind, size[1], size[2], size[3], t[1], t[2], t[3], t[0], 0, 0, 0,
            ]);
            out.extend_from_slice(body);
            out.extend_from_slice(&((body.len() as u32 + 11).to_be_bytes()));
        }
        out
    }

    #[test]
    fn file_reader_reads_extended_timestamps() {
        let data = file(&[(9, 0x0123_4567, &[0x17, 1, 0, 0, 0]), (8, 5, &[0xAF, 1])]);
        let mut reader = FlvFileReader::new(&data).unwrap();
        assert!(reader.has_audio && reader.has_video);
        let tag = reader.next().unwrap().unwrap();
        assert_eq!((tag.kind, tag.timestamp_ms), (TagKind::Video, 0x0123_4567));
        assert_eq!(reader.next().unwrap().unwrap().kind, TagKind::Audio);
        assert!(reader.next().is_none());
    }

    #[test]
    fn file_reader_rejects_garbage_and_truncation() {
        assert!(matches!(
            FlvFileReader::new(b"GIF89a\0\0\0"),
            Err(FlvError::NotFlv(_))
        ));
        let mut data = file(&[(9, 0, &[0x17, 1, 0, 0, 0, 1, 2, 3])]);
        data.truncate(data.len() - 7);
        let mut reader = FlvFileReader::new(&data).unwrap();
        assert!(matches!(
            reader.next(),
            Some(Err(FlvError::Truncated { .. }))
        ));
        assert!(reader.next().is_none());
    }
}
