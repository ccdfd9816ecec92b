//! AV1 as Enhanced RTMP's `av01` carries it: the `av1C` record (AV1-ISOBMFF §2.3) with
//! the sequence header OBU, the picture size and rate from that header, the HLS CODECS
//! string, and temporal units turned into MP4 samples.
//!
//! The record is read by `mp4-atom` (its `Av1c`, also what the `av01` sample entry is
//! written from), the sequence header by `scuffle-av1`. Pure; every size checked. OBU
//! framing (a one-byte header and a LEB128 size) is walked here: it is four lines, and
//! neither crate walks a buffer of OBUs without copying it.

use bytes::Bytes;
use mp4_atom::{Atom, Av1c};
use scuffle_av1::seq::SequenceHeaderObu;

use super::avc::SpsInfo;

/// A record is a few bytes and a sequence header: far below this.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// No encoder puts more OBUs in one temporal unit (a frame of many tile groups).
const MAX_OBUS_PER_UNIT: usize = 1024;

/// OBU types (AV1 §6.2.2) Kawa looks at.
pub mod obu_type {
    pub const SEQUENCE_HEADER: u8 = 1;
    pub const TEMPORAL_DELIMITER: u8 = 2;
    pub const PADDING: u8 = 15;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Av1Error {
    #[error("AV1 configuration record of {0} bytes (at most {MAX_RECORD_BYTES})")]
    TooLarge(usize),
    #[error("malformed AV1 configuration record")]
    BadRecord,
    #[error("AV1 configuration without a sequence header")]
    NoSequenceHeader,
    #[error("malformed AV1 sequence header")]
    BadSequenceHeader,
    #[error("AV1 OBU at byte {offset}: {reason}")]
    BadObu { offset: usize, reason: &'static str },
    #[error("more than {MAX_OBUS_PER_UNIT} OBUs in one temporal unit")]
    TooManyObus,
}

/// An `av1C` record, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Av1Config {
    pub av1c: Av1c,
    /// The sequence header OBU (with its header), as the record carried it.
    pub sequence_header: Bytes,
    /// The maximum picture size and, when the timing info says, the rate.
    pub info: SpsInfo,
}

impl Av1Config {
    pub fn parse(record: &[u8]) -> Result<Self, Av1Error> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(Av1Error::TooLarge(record.len()));
        }
        let av1c = Av1c::decode_body(&mut &record[..]).map_err(|_| Av1Error::BadRecord)?;
        let mut sequence_header = None;
        for obu in Obus::new(&av1c.config_obus) {
            let obu = obu?;
            if obu.kind == obu_type::SEQUENCE_HEADER {
                sequence_header = Some(Bytes::copy_from_slice(obu.whole));
                break;
            }
        }
        let sequence_header = sequence_header.ok_or(Av1Error::NoSequenceHeader)?;
        let info = sequence_info(&parse_sequence_header(&sequence_header)?)?;
        Ok(Self {
            av1c,
            sequence_header,
            info,
        })
    }

    /// The configuration of a stream whose only record is the sequence header OBU in its
    /// keyframes (as Kawa's AV1 frames carry it): the `av1C` fields read from it.
    pub fn from_sequence_header(obu: &[u8]) -> Result<Self, Av1Error> {
        let parsed = parse_sequence_header(obu)?;
        let point = parsed.operating_points.first();
        let color = &parsed.color_config;
        let av1c = Av1c {
            seq_profile: parsed.seq_profile,
            seq_level_idx_0: point.map_or(31, |p| p.seq_level_idx),
            seq_tier_0: point.is_some_and(|p| p.seq_tier),
            high_bitdepth: color.bit_depth > 8,
            twelve_bit: color.bit_depth == 12,
            monochrome: color.mono_chrome,
            chroma_subsampling_x: color.subsampling_x,
            chroma_subsampling_y: color.subsampling_y,
            chroma_sample_position: color.chroma_sample_position,
            initial_presentation_delay: None,
            config_obus: obu.to_vec(),
        };
        Ok(Self {
            av1c,
            sequence_header: Bytes::copy_from_slice(obu),
            info: sequence_info(&parsed)?,
        })
    }

    /// AV1-ISOBMFF Annex A: `av01.<profile>.<level><tier>.<bit depth>` (the optional
    /// fields after it default to 4:2:0 BT.709, as browsers assume).
    pub fn codec_string(&self) -> String {
        let c = &self.av1c;
        let tier = if c.seq_tier_0 { 'H' } else { 'M' };
        let depth = match (c.high_bitdepth, c.twelve_bit) {
            (true, true) => 12,
            (true, false) => 10,
            _ => 8,
        };
        format!(
            "av01.{}.{:02}{tier}.{depth:02}",
            c.seq_profile, c.seq_level_idx_0
        )
    }
}

/// A sequence header OBU (with its OBU header), parsed.
fn parse_sequence_header(obu: &[u8]) -> Result<SequenceHeaderObu, Av1Error> {
    // scuffle-av1 reads what an encoder writes; a hostile header must not take the
    // process down with it, whatever that crate does on it.
    std::panic::catch_unwind(|| {
        let mut reader = obu;
        let header = scuffle_av1::ObuHeader::parse(&mut reader)?;
        SequenceHeaderObu::parse(header, &mut reader)
    })
    .map_err(|_| Av1Error::BadSequenceHeader)?
    .map_err(|_| Av1Error::BadSequenceHeader)
}

/// The picture size and frame rate of a sequence header.
fn sequence_info(parsed: &SequenceHeaderObu) -> Result<SpsInfo, Av1Error> {
    let width = u32::try_from(parsed.max_frame_width).map_err(|_| Av1Error::BadSequenceHeader)?;
    let height = u32::try_from(parsed.max_frame_height).map_err(|_| Av1Error::BadSequenceHeader)?;
    let frame_rate = parsed.timing_info.as_ref().and_then(|t| {
        let ticks = t.num_ticks_per_picture? as f64 * f64::from(t.num_units_in_display_tick);
        (ticks > 0.0 && t.time_scale > 0).then(|| f64::from(t.time_scale) / ticks)
    });
    Ok(SpsInfo {
        width,
        height,
        frame_rate,
    })
}

/// One OBU of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obu<'a> {
    pub kind: u8,
    /// The OBU with its header and size field.
    pub whole: &'a [u8],
}

/// The OBUs of a buffer in the low-overhead format (AV1 §5.2; every OBU but the last
/// has a size field, as MP4 samples and E-RTMP frames carry them).
pub struct Obus<'a> {
    data: &'a [u8],
    offset: usize,
}

impl<'a> Obus<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, offset: 0 }
    }

    fn next_obu(&mut self) -> Result<Obu<'a>, Av1Error> {
        let bad = |reason| Av1Error::BadObu {
            offset: self.offset,
            reason,
        };
        let rest = &self.data[self.offset..];
        let header = rest[0];
        if header & 0x80 != 0 {
            return Err(bad("forbidden bit set"));
        }
        let kind = (header >> 3) & 0x0F;
        let header_len = if header & 0x04 != 0 { 2 } else { 1 };
        let has_size = header & 0x02 != 0;
        let total = if has_size {
            let (size, leb_len) = leb128(rest.get(header_len..).unwrap_or_default())
                .ok_or_else(|| bad("size field cut short"))?;
            usize::try_from(size)
                .ok()
                .and_then(|s| s.checked_add(header_len + leb_len))
                .filter(|t| *t <= rest.len())
                .ok_or_else(|| bad("size runs past the buffer"))?
        } else {
            rest.len()
        };
        if total < header_len {
            return Err(bad("header cut short"));
        }
        self.offset += total;
        Ok(Obu {
            kind,
            whole: &rest[..total],
        })
    }
}

impl<'a> Iterator for Obus<'a> {
    type Item = Result<Obu<'a>, Av1Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.data.len() {
            return None;
        }
        let item = self.next_obu();
        if item.is_err() {
            self.offset = self.data.len();
        }
        Some(item)
    }
}

/// A LEB128 value (at most 8 bytes, AV1 §4.10.5) and its length.
fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Checks a temporal unit from the network and drops its temporal delimiters and
/// padding (AV1-ISOBMFF §2.4: a sample holds neither): what an `av01` sample and
/// Kawa's frames carry. A keyframe without a sequence header gets `sequence_header`
/// first (AV1-ISOBMFF allows it in a sample, identical to the record's), so that it
/// decodes on its own, as H.264 and HEVC keyframes get their parameter sets.
pub fn to_frame(unit: &[u8], sequence_header: Option<&[u8]>) -> Result<Vec<u8>, Av1Error> {
    let mut out = Vec::with_capacity(unit.len() + sequence_header.map_or(0, <[u8]>::len));
    let mut has_header = false;
    for (count, obu) in Obus::new(unit).enumerate() {
        let obu = obu?;
        if count >= MAX_OBUS_PER_UNIT {
            return Err(Av1Error::TooManyObus);
        }
        has_header |= obu.kind == obu_type::SEQUENCE_HEADER;
        if !matches!(obu.kind, obu_type::TEMPORAL_DELIMITER | obu_type::PADDING) {
            out.extend_from_slice(obu.whole);
        }
    }
    if let (Some(header), false) = (sequence_header, has_header) {
        out.splice(0..0, header.iter().copied());
    }
    Ok(out)
}

/// The sequence header OBU of a frame, if it has one.
pub fn sequence_header_of(frame: &[u8]) -> Option<&[u8]> {
    Obus::new(frame)
        .map_while(Result::ok)
        .find(|o| o.kind == obu_type::SEQUENCE_HEADER)
        .map(|o| o.whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{FlvFileReader, TagKind};
    use crate::media::flv_ex::{self, ExPacket};

    const AV1_FLV: &[u8] = include_bytes!("../../tests/fixtures/av1.flv");

    fn packets() -> Vec<ExPacket<'static>> {
        FlvFileReader::new(AV1_FLV)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|t| t.kind == TagKind::Video)
            .map(|t| flv_ex::parse(t.body).unwrap().packet)
            .collect()
    }

    #[test]
    fn the_record_ffmpeg_sends_gives_size_and_codecs() {
        let Some(ExPacket::SequenceStart(record)) = packets().into_iter().next() else {
            panic!("no sequence start");
        };
        let config = Av1Config::parse(record).unwrap();
        assert_eq!((config.info.width, config.info.height), (160, 120));
        assert_eq!(config.codec_string(), "av01.0.00M.08");
        assert_eq!(
            config.sequence_header[0] >> 3 & 0x0F,
            obu_type::SEQUENCE_HEADER
        );
        // The same configuration from the sequence header alone (an in-band keyframe's).
        let again = Av1Config::from_sequence_header(&config.sequence_header).unwrap();
        assert_eq!(again.av1c, config.av1c);
        assert_eq!(again.info, config.info);
    }

    #[test]
    fn every_keyframe_carries_the_sequence_header_once() {
        let mut config = None;
        let mut keyframes = 0;
        for packet in packets() {
            match packet {
                ExPacket::SequenceStart(record) => config = Some(Av1Config::parse(record).unwrap()),
                ExPacket::Frame {
                    keyframe: true,
                    data,
                    ..
                } => {
                    let header = &config.as_ref().unwrap().sequence_header;
                    let frame = to_frame(data, Some(header)).unwrap();
                    // SVT-AV1 repeats its own (its bits differ from the record's in
                    // a few fields): it is kept, and none is added.
                    let own = sequence_header_of(data).unwrap_or(header);
                    assert_eq!(sequence_header_of(&frame), Some(own));
                    let headers = Obus::new(&frame)
                        .filter(|o| o.as_ref().unwrap().kind == obu_type::SEQUENCE_HEADER)
                        .count();
                    assert_eq!(headers, 1);
                    keyframes += 1;
                }
                _ => {}
            }
        }
        assert!(keyframes >= 1, "{keyframes} keyframes");
        // A unit without one gets it in front.
        let frame = to_frame(&[0x12, 0x00, 0x32, 0x01, 0xAA], Some(&[0x0A, 0x01, 0x00])).unwrap();
        assert_eq!(frame, [0x0A, 0x01, 0x00, 0x32, 0x01, 0xAA]);
    }

    #[test]
    fn frames_lose_their_temporal_delimiters_and_nothing_else() {
        let mut frames = 0;
        for packet in packets() {
            if let ExPacket::Frame { data, .. } = packet {
                let frame = to_frame(data, None).unwrap();
                let kinds: Vec<u8> = Obus::new(&frame).map(|o| o.unwrap().kind).collect();
                assert!(!kinds.contains(&obu_type::TEMPORAL_DELIMITER));
                let kept: usize = Obus::new(data)
                    .map(|o| o.unwrap())
                    .filter(|o| o.kind != obu_type::TEMPORAL_DELIMITER)
                    .map(|o| o.whole.len())
                    .sum();
                assert_eq!(frame.len(), kept);
                frames += 1;
            }
        }
        assert!(frames > 10, "{frames} frames");
    }

    #[test]
    fn broken_obus_are_errors() {
        // A size that runs past the buffer, a forbidden bit, a cut LEB128.
        for bad in [&[0x12, 0x05, 0x00][..], &[0x92, 0x00], &[0x12, 0x80]] {
            assert!(to_frame(bad, None).is_err(), "{bad:02x?}");
        }
        let too_many = [0x12u8, 0x00].repeat(MAX_OBUS_PER_UNIT + 1);
        assert_eq!(to_frame(&too_many, None), Err(Av1Error::TooManyObus));
        assert!(Av1Config::parse(&[0x81, 0x00, 0x0c, 0x00]).is_err());
        assert_eq!(
            Av1Config::parse(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(Av1Error::TooLarge(MAX_RECORD_BYTES + 1))
        );
    }
}
