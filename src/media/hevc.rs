//! HEVC's decoder configuration, as Enhanced RTMP's `hvc1` sequence start carries it
//! (an HEVCDecoderConfigurationRecord, ISO/IEC 14496-15 §8.3.3.1): the parameter sets,
//! the picture size from the SPS, and the HLS CODECS string.
//!
//! The record is read by `mp4-atom` (its `Hvcc`, also what the `hvc1` sample entry is
//! written from), the SPS by `scuffle-h265`. Pure; every size checked.

use bytes::Bytes;
use mp4_atom::{Atom, HvcCArray, Hvcc};

use super::annexb::AnnexBNals;
use super::avc::{AvcError, AvccNals, START_CODE, SpsInfo};

/// A record is parameter sets and a few fields: far below this.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// HEVC NAL unit types (ITU-T H.265 Table 7-1) Kawa looks at.
pub mod nal_type {
    pub const VPS: u8 = 32;
    pub const SPS: u8 = 33;
    pub const PPS: u8 = 34;
    pub const AUD: u8 = 35;
    /// BLA_W_LP to CRA_NUT (16..=21): an IRAP picture, where decoding can start.
    pub const IRAP: std::ops::RangeInclusive<u8> = 16..=21;

    /// The type from a NAL unit's two-byte header.
    pub fn of(nal: &[u8]) -> Option<u8> {
        nal.first().map(|b| (b >> 1) & 0x3F)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HevcError {
    #[error("HEVC configuration record of {0} bytes (at most {MAX_RECORD_BYTES})")]
    TooLarge(usize),
    #[error("malformed HEVC configuration record")]
    BadRecord,
    #[error("HEVC configuration record version {0} (only 1 exists)")]
    Version(u8),
    #[error("HEVC configuration without an SPS")]
    NoSps,
    #[error("malformed HEVC SPS")]
    BadSps,
    #[error("HEVC access unit: {0}")]
    Nal(#[from] AvcError),
}

/// An access unit delimiter: NAL type 35, layer 0, temporal id 1; pic_type 2 (any).
const AUD_NAL: [u8; 3] = [0x46, 0x01, 0x50];
/// As for H.264 (`media::avc`): no encoder sends more in one picture.
const MAX_NALS_PER_ACCESS_UNIT: usize = 1024;
/// VCL NAL unit types (slices) are 0 to 31.
const LAST_VCL: u8 = 31;

/// One length-prefixed HEVC access unit (as `hvc1` frames carry it) to Annex B: an AUD
/// first (the encoder's dropped), and on an IRAP picture the VPS, SPS and PPS before the
/// first slice unless it has its own, so every segment decodes on its own. Returns the
/// bytes and whether the unit is an IRAP (a segment may start there).
pub fn to_annexb(data: &[u8], config: &HevcDecoderConfig) -> Result<(Vec<u8>, bool), HevcError> {
    length_prefixed_to_annexb(data, config.hvcc.length_size_minus_one + 1, config)
}

/// [`to_annexb`] with lengths of `length_size` bytes (4 in a sample-form frame).
pub fn length_prefixed_to_annexb(
    data: &[u8],
    length_size: u8,
    config: &HevcDecoderConfig,
) -> Result<(Vec<u8>, bool), HevcError> {
    let (mut irap, mut has_params) = (false, false);
    let mut payload = 0;
    for (count, nal) in AvccNals::new(data, length_size).enumerate() {
        let nal = nal?;
        if count >= MAX_NALS_PER_ACCESS_UNIT {
            return Err(AvcError::TooManyNals.into());
        }
        match nal_type::of(nal) {
            Some(t) if nal_type::IRAP.contains(&t) => irap = true,
            Some(nal_type::SPS) => has_params = true,
            _ => {}
        }
        payload += START_CODE.len() + nal.len();
    }
    let sets: Vec<&Bytes> = config
        .vps
        .iter()
        .chain(&config.sps)
        .chain(&config.pps)
        .collect();
    let mut out = Vec::with_capacity(START_CODE.len() + AUD_NAL.len() + payload + 256);
    let emit = |out: &mut Vec<u8>, nal: &[u8]| {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    };
    emit(&mut out, &AUD_NAL);
    let mut params_done = !irap || has_params;
    for nal in AvccNals::new(data, length_size) {
        let nal = nal?;
        let Some(kind) = nal_type::of(nal) else {
            continue;
        };
        if kind == nal_type::AUD {
            continue;
        }
        if !params_done && kind <= LAST_VCL {
            for set in &sets {
                emit(&mut out, set);
            }
            params_done = true;
        }
        emit(&mut out, nal);
    }
    Ok((out, irap))
}

/// An Annex B access unit (Kawa's HEVC frame) appended to `out` as an `hvc1` sample:
/// 4-byte lengths, without AUDs and parameter sets (an `hvc1` sample entry holds every
/// parameter set, and Apple's players require that they appear nowhere else).
pub fn append_sample(access_unit: &[u8], out: &mut Vec<u8>) {
    for nal in AnnexBNals::new(access_unit) {
        if matches!(
            nal_type::of(nal),
            Some(nal_type::AUD | nal_type::VPS | nal_type::SPS | nal_type::PPS)
        ) {
            continue;
        }
        // Frames are capped far below 4 GiB at ingest.
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
}

/// Whether an Annex B access unit holds an IRAP picture.
pub fn has_irap(access_unit: &[u8]) -> bool {
    AnnexBNals::new(access_unit)
        .any(|nal| nal_type::of(nal).is_some_and(|t| nal_type::IRAP.contains(&t)))
}

/// An `hvcC` record, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct HevcDecoderConfig {
    pub hvcc: Hvcc,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    /// From the first SPS: the cropped picture size and, when the VUI says, the rate.
    pub info: SpsInfo,
}

impl HevcDecoderConfig {
    pub fn parse(record: &[u8]) -> Result<Self, HevcError> {
        if record.len() > MAX_RECORD_BYTES {
            return Err(HevcError::TooLarge(record.len()));
        }
        let hvcc = Hvcc::decode_body(&mut &record[..]).map_err(|_| HevcError::BadRecord)?;
        if hvcc.configuration_version != 1 {
            return Err(HevcError::Version(hvcc.configuration_version));
        }
        let sets = |kind: u8| -> Vec<Bytes> {
            hvcc.arrays
                .iter()
                .filter(|a| a.nal_unit_type == kind)
                .flat_map(|a| a.nalus.iter())
                .filter(|n| nal_type::of(n) == Some(kind))
                .map(|n| Bytes::copy_from_slice(n))
                .collect()
        };
        let (vps, sps, pps) = (
            sets(nal_type::VPS),
            sets(nal_type::SPS),
            sets(nal_type::PPS),
        );
        let info = sps_info(&parse_sps(sps.first().ok_or(HevcError::NoSps)?)?)?;
        Ok(Self {
            hvcc,
            vps,
            sps,
            pps,
            info,
        })
    }

    /// The configuration of a stream whose only record is the parameter sets before its
    /// IRAP pictures (HEVC in MPEG-TS, as OBS sends it over SRT): the first VPS, SPS
    /// and PPS of an Annex B access unit, and an hvcC with the SPS's profile, tier and
    /// level. `Ok(None)` when the unit has no SPS.
    pub fn from_annexb(access_unit: &[u8]) -> Result<Option<Self>, HevcError> {
        let first = |kind: u8| {
            AnnexBNals::new(access_unit)
                .find(|nal| nal_type::of(nal) == Some(kind))
                .map(Bytes::copy_from_slice)
        };
        let Some(sps) = first(nal_type::SPS) else {
            return Ok(None);
        };
        let (vps, pps) = (first(nal_type::VPS), first(nal_type::PPS));
        let parsed = parse_sps(&sps)?;
        let rbsp = &parsed.rbsp;
        let ptl = general_profile_tier_level(&sps).ok_or(HevcError::BadSps)?;
        let array = |kind: u8, set: &Option<Bytes>| HvcCArray {
            completeness: true,
            nal_unit_type: kind,
            nalus: set.iter().map(|s| s.to_vec()).collect(),
        };
        let hvcc = Hvcc {
            configuration_version: 1,
            general_profile_space: ptl[0] >> 6,
            general_tier_flag: ptl[0] & 0x20 != 0,
            general_profile_idc: ptl[0] & 0x1F,
            general_profile_compatibility_flags: [ptl[1], ptl[2], ptl[3], ptl[4]],
            general_constraint_indicator_flags: [ptl[5], ptl[6], ptl[7], ptl[8], ptl[9], ptl[10]],
            general_level_idc: ptl[11],
            chroma_format_idc: rbsp.chroma_format_idc,
            bit_depth_luma_minus8: rbsp.bit_depth_luma_minus8,
            bit_depth_chroma_minus8: rbsp.bit_depth_chroma_minus8,
            num_temporal_layers: rbsp.sps_max_sub_layers_minus1 + 1,
            temporal_id_nested: rbsp.sps_temporal_id_nesting_flag,
            length_size_minus_one: 3,
            arrays: vec![
                array(nal_type::VPS, &vps),
                array(nal_type::SPS, &Some(sps.clone())),
                array(nal_type::PPS, &pps),
            ],
            ..Hvcc::new()
        };
        Ok(Some(Self {
            hvcc,
            vps: vps.into_iter().collect(),
            sps: vec![sps],
            pps: pps.into_iter().collect(),
            info: sps_info(&parsed)?,
        }))
    }

    /// `access_unit` (Annex B) with this configuration's VPS, SPS and PPS in front: for
    /// an IRAP picture an encoder sent without them.
    pub fn with_parameter_sets(&self, access_unit: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(access_unit.len() + 256);
        for set in self.vps.iter().chain(&self.sps).chain(&self.pps) {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(set);
        }
        out.extend_from_slice(access_unit);
        out
    }

    /// RFC 6381 / ISO/IEC 14496-15 Annex E: `hvc1.<space><profile>.<compatibility,
    /// bit-reversed, hex>.<L|H><level>.<constraint bytes, trailing zeros dropped>`.
    pub fn codec_string(&self) -> String {
        let h = &self.hvcc;
        let space = match h.general_profile_space {
            1 => "A",
            2 => "B",
            3 => "C",
            _ => "",
        };
        let compatibility =
            u32::from_be_bytes(h.general_profile_compatibility_flags).reverse_bits();
        let tier = if h.general_tier_flag { 'H' } else { 'L' };
        let mut out = format!(
            "hvc1.{space}{}.{compatibility:X}.{tier}{}",
            h.general_profile_idc, h.general_level_idc
        );
        let flags = &h.general_constraint_indicator_flags;
        let used = flags.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        for b in &flags[..used] {
            out.push_str(&format!(".{b:X}"));
        }
        out
    }
}

/// An SPS NAL unit (with its header), parsed.
fn parse_sps(nal: &[u8]) -> Result<scuffle_h265::SpsNALUnit, HevcError> {
    // scuffle-h265 reads what an encoder writes; a hostile SPS must not take the
    // process down with it, whatever that crate does on it.
    std::panic::catch_unwind(|| scuffle_h265::SpsNALUnit::parse(nal))
        .map_err(|_| HevcError::BadSps)?
        .map_err(|_| HevcError::BadSps)
}

/// The 12 bytes of an SPS's general profile_tier_level (H.265 §7.3.3: profile space,
/// tier and profile; 32 compatibility flags; 48 constraint flags; level), which hvcC
/// copies as they are. They are byte-aligned, right after the NAL header and one byte
/// of SPS fields; emulation prevention bytes are taken out first. Read here because
/// scuffle-h265 gives these fields decoded, not as the bytes hvcC wants.
fn general_profile_tier_level(sps: &[u8]) -> Option<[u8; 12]> {
    let mut rbsp = Vec::with_capacity(13);
    let mut zeros = 0;
    for &b in sps.get(2..)? {
        if zeros >= 2 && b == 0x03 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        rbsp.push(b);
        if rbsp.len() == 13 {
            return rbsp[1..].try_into().ok();
        }
    }
    None
}

/// The picture size (after the conformance window) and frame rate of a parsed SPS.
fn sps_info(parsed: &scuffle_h265::SpsNALUnit) -> Result<SpsInfo, HevcError> {
    let sps = &parsed.rbsp;
    let window = &sps.conformance_window;
    let crop = |size: u64, unit: u8, a: u64, b: u64| {
        a.checked_add(b)
            .and_then(|c| c.checked_mul(u64::from(unit)))
            .and_then(|c| size.checked_sub(c))
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
    };
    let width = crop(
        sps.pic_width_in_luma_samples.get(),
        sps.sub_width_c(),
        window.conf_win_left_offset,
        window.conf_win_right_offset,
    );
    let height = crop(
        sps.pic_height_in_luma_samples.get(),
        sps.sub_height_c(),
        window.conf_win_top_offset,
        window.conf_win_bottom_offset,
    );
    let (Some(width), Some(height)) = (width, height) else {
        return Err(HevcError::BadSps);
    };
    let frame_rate = sps
        .vui_parameters
        .as_ref()
        .and_then(|v| v.vui_timing_info.as_ref())
        .map(|t| f64::from(t.time_scale.get()) / f64::from(t.num_units_in_tick.get()))
        .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1000.0);
    Ok(SpsInfo {
        width,
        height,
        frame_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{FlvFileReader, TagKind};
    use crate::media::flv_ex::{self, ExPacket};

    /// The hvcC FFmpeg 9 (x265) sent for a 160x120, 25 fps stream.
    fn fixture_record() -> Vec<u8> {
        let file = include_bytes!("../../tests/fixtures/hevc_aac.flv");
        for tag in FlvFileReader::new(file).unwrap() {
            let tag = tag.unwrap();
            if tag.kind != TagKind::Video {
                continue;
            }
            if let ExPacket::SequenceStart(record) = flv_ex::parse(tag.body).unwrap().packet {
                return record.to_vec();
            }
        }
        panic!("no HEVC sequence start in the fixture")
    }

    #[test]
    fn an_x265_record_gives_its_parameter_sets_size_and_codecs() {
        let config = HevcDecoderConfig::parse(&fixture_record()).unwrap();
        assert_eq!(
            (config.vps.len(), config.sps.len(), config.pps.len()),
            (1, 1, 1)
        );
        assert_eq!((config.info.width, config.info.height), (160, 120));
        assert_eq!(config.info.frame_rate, Some(25.0));
        // Main profile (1), compatible with Main and Main 10 (flags 0x60000000, bit-
        // reversed 0x6), level 1 ... whatever x265 chose for 160x120 (30 = level 1).
        let codecs = config.codec_string();
        assert!(codecs.starts_with("hvc1.1.6.L"), "{codecs}");
        assert_eq!(config.hvcc.length_size_minus_one, 3);
    }

    /// The same parameter sets in band (as HEVC in TS carries them) give the same
    /// profile, tier, level, constraint flags and picture as x265's own record.
    #[test]
    fn in_band_parameter_sets_give_the_record_the_encoder_would_have_sent() {
        let record = HevcDecoderConfig::parse(&fixture_record()).unwrap();
        let slice: &[u8] = &[0x26, 0x01, 0xAF, 0x00];
        let unit = record.with_parameter_sets(&[&START_CODE[..], slice].concat());
        let config = HevcDecoderConfig::from_annexb(&unit).unwrap().unwrap();
        assert_eq!(config.codec_string(), record.codec_string());
        assert_eq!(config.info, record.info);
        let (a, b) = (&config.hvcc, &record.hvcc);
        assert_eq!(
            (
                a.chroma_format_idc,
                a.bit_depth_luma_minus8,
                a.num_temporal_layers
            ),
            (
                b.chroma_format_idc,
                b.bit_depth_luma_minus8,
                b.num_temporal_layers
            )
        );
        assert_eq!(
            (&config.vps, &config.sps, &config.pps),
            (&record.vps, &record.sps, &record.pps)
        );
        // No SPS: nothing to learn from; a broken one: an error.
        assert_eq!(
            HevcDecoderConfig::from_annexb(&[0, 0, 0, 1, 0x26, 0x01]),
            Ok(None)
        );
        assert!(HevcDecoderConfig::from_annexb(&[0, 0, 0, 1, 0x42, 0x01, 0x01]).is_err());
    }

    /// Every frame of the fixture to Annex B: IRAPs where FFmpeg said keyframe, with the
    /// parameter sets before their slices; the rest unchanged but for the AUD.
    #[test]
    fn frames_become_annex_b_with_parameter_sets_at_each_irap() {
        let file = include_bytes!("../../tests/fixtures/hevc_aac.flv");
        let config = HevcDecoderConfig::parse(&fixture_record()).unwrap();
        let mut frames = 0;
        for tag in FlvFileReader::new(file).unwrap() {
            let tag = tag.unwrap();
            if tag.kind != TagKind::Video {
                continue;
            }
            let ExPacket::Frame { keyframe, data, .. } = flv_ex::parse(tag.body).unwrap().packet
            else {
                continue;
            };
            frames += 1;
            let (annexb, irap) = to_annexb(data, &config).unwrap();
            assert_eq!(irap, keyframe);
            assert_eq!(has_irap(&annexb), irap);
            let kinds: Vec<u8> = AnnexBNals::new(&annexb).filter_map(nal_type::of).collect();
            assert_eq!(kinds[0], nal_type::AUD);
            assert_eq!(kinds.iter().filter(|k| **k == nal_type::AUD).count(), 1);
            if irap {
                let first_slice = kinds.iter().position(|k| *k <= LAST_VCL).unwrap();
                assert!(kinds[..first_slice].contains(&nal_type::SPS), "{kinds:?}");
                assert!(kinds[..first_slice].contains(&nal_type::VPS), "{kinds:?}");
            }
        }
        assert_eq!(frames, 25);
        assert!(
            to_annexb(&[0, 0, 0, 9, 1], &config).is_err(),
            "a NAL past the end"
        );
    }

    #[test]
    fn codec_strings_follow_annex_e() {
        let mut config = HevcDecoderConfig::parse(&fixture_record()).unwrap();
        config.hvcc.general_level_idc = 93;
        config.hvcc.general_constraint_indicator_flags = [0xB0, 0, 0, 0, 0, 0];
        assert_eq!(config.codec_string(), "hvc1.1.6.L93.B0");
        config.hvcc.general_profile_space = 1;
        config.hvcc.general_tier_flag = true;
        config.hvcc.general_profile_idc = 2;
        config.hvcc.general_profile_compatibility_flags = [0x20, 0, 0, 0];
        config.hvcc.general_constraint_indicator_flags = [0x90, 0, 0x10, 0, 0, 0];
        assert_eq!(config.codec_string(), "hvc1.A2.4.H93.90.0.10");
    }

    #[test]
    fn damaged_records_are_errors() {
        let record = fixture_record();
        assert_eq!(HevcDecoderConfig::parse(&[]), Err(HevcError::BadRecord));
        assert!(HevcDecoderConfig::parse(&record[..record.len() / 2]).is_err());
        let mut version = record.clone();
        version[0] = 2;
        assert_eq!(
            HevcDecoderConfig::parse(&version),
            Err(HevcError::Version(2))
        );
        assert!(matches!(
            HevcDecoderConfig::parse(&vec![1; MAX_RECORD_BYTES + 1]),
            Err(HevcError::TooLarge(_))
        ));
        // Every byte of the record damaged in turn: an error or a config, no panic.
        for i in 0..record.len() {
            for byte in [0x00, 0xFF, record[i] ^ 0x55] {
                let mut damaged = record.clone();
                damaged[i] = byte;
                let _ = HevcDecoderConfig::parse(&damaged);
            }
        }
    }
}
