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
        let info = sequence_info(&sequence_header)?;
        Ok(Self {
            av1c,
            sequence_header,
            info,
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

/// The picture size and frame rate of a sequence header OBU.
fn sequence_info(obu: &[u8]) -> Result<SpsInfo, Av1Error> {
    // scuffle-av1 reads what an encoder writes; a hostile header must not take the
    // process down with it, whatever that crate does on it.
    let parsed = std::panic::catch_unwind(|| {
        let mut reader = obu;
        let header = scuffle_av1::ObuHeader::parse(&mut reader)?;
        scuffle_av1::seq::SequenceHeaderObu::parse(header, &mut reader)
    })
    .map_err(|_| Av1Error::BadSequenceHeader)?
    .map_err(|_| Av1Error::BadSequenceHeader)?;
    let width = u32::try_from(parsed.max_frame_width).map_err(|_| Av1Error::BadSequenceHeader)?;
    let height =
        u32::try_from(parsed.max_frame_height).map_err(|_| Av1Error::BadSequenceHeader)?;
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
/// Kawa's frames carry.
pub fn to_frame(unit: &[u8]) -> Result<Vec<u8>, Av1Error> {
    let mut out = Vec::with_capacity(unit.len());
    for (count, obu) in Obus::new(unit).enumerate() {
        let obu = obu?;
        if count >= MAX_OBUS_PER_UNIT {
            return Err(Av1Error::TooManyObus);
        }
        if !matches!(obu.kind, obu_type::TEMPORAL_DELIMITER | obu_type::PADDING) {
            out.extend_from_slice(obu.whole);
        }
    }
    Ok(out)
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
        assert_eq!(config.sequence_header[0] >> 3 & 0x0F, obu_type::SEQUENCE_HEADER);
    }

    #[test]
    fn frames_lose_their_temporal_delimiters_and_nothing_else() {
        let mut frames = 0;
        for packet in packets() {
            if let ExPacket::Frame { data, .. } = packet {
                let frame = to_frame(data).unwrap();
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
            assert!(to_frame(bad).is_err(), "{bad:02x?}");
        }
        let too_many = [0x12u8, 0x00].repeat(MAX_OBUS_PER_UNIT + 1);
        assert_eq!(to_frame(&too_many), Err(Av1Error::TooManyObus));
        assert!(Av1Config::parse(&[0x81, 0x00, 0x0c, 0x00]).is_err());
        assert_eq!(
            Av1Config::parse(&vec![0; MAX_RECORD_BYTES + 1]),
            Err(Av1Error::TooLarge(MAX_RECORD_BYTES + 1))
        );
    }
}
