//! H.264 in RTMP: the AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1) and the
//! conversion of length-prefixed access units (AVCC) to Annex B start-code form
//! (ITU-T H.264 Annex B), which MPEG-TS carries.

use bytes::Bytes;
use h264_reader::nal::sps::SeqParameterSet;
use h264_reader::rbsp::{BitReader, decode_nal};

/// NAL unit types (H.264 Table 7-1) Kawa looks at.
pub mod nal_type {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// An access unit delimiter with primary_pic_type 7 ("any slice type"): iOS, video.js
/// and QuickTime want one before every access unit in a TS.
const AUD_NAL: [u8; 2] = [0x09, 0xF0];
/// The Annex B start code put before each NAL unit (H.264 and HEVC alike).
pub(crate) const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Caps on values from the wire, so a hostile publisher cannot make us allocate or loop
/// without bound. A 4K frame has a few dozen slices; 1024 NAL units leaves ample room.
pub(crate) const MAX_NALS_PER_ACCESS_UNIT: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvcError {
    #[error("AVCDecoderConfigurationRecord truncated at byte {0}")]
    Truncated(usize),
    #[error("AVCDecoderConfigurationRecord version {0} (expected 1)")]
    BadVersion(u8),
    #[error("NAL length size of 3 bytes is not allowed")]
    BadLengthSize,
    #[error("AVCDecoderConfigurationRecord has no SPS")]
    NoSps,
    #[error("AVCDecoderConfigurationRecord has no PPS")]
    NoPps,
    #[error("SPS cannot be parsed: {0}")]
    BadSps(String),
    #[error("NAL unit at byte {offset} claims {len} bytes, only {have} remain")]
    NalOverrun {
        offset: usize,
        len: usize,
        have: usize,
    },
    #[error("access unit has more than {MAX_NALS_PER_ACCESS_UNIT} NAL units")]
    TooManyNals,
}

/// What the SPS says about the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct SpsInfo {
    pub width: u32,
    pub height: u32,
    /// From the VUI timing info, when the encoder wrote it.
    pub frame_rate: Option<f64>,
}

/// ISO/IEC 14496-15 §5.3.3.1 AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq)]
pub struct AvcDecoderConfig {
    pub profile_indication: u8,
    pub profile_compatibility: u8,
    pub level_indication: u8,
    /// Bytes in each NAL unit length prefix: 1, 2 or 4.
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    /// Parsed from the first SPS.
    pub info: SpsInfo,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> Result<u8, AvcError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(AvcError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], AvcError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(AvcError::Truncated(self.pos))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(AvcError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }

    fn parameter_sets(&mut self, count: usize) -> Result<Vec<Bytes>, AvcError> {
        (0..count)
            .map(|_| {
                let len = u16::from_be_bytes([self.u8()?, self.u8()?]) as usize;
                Ok(Bytes::copy_from_slice(self.take(len)?))
            })
            .filter(|ps: &Result<Bytes, AvcError>| ps.as_ref().map_or(true, |b| !b.is_empty()))
            .collect()
    }
}

impl AvcDecoderConfig {
    pub fn parse(data: &[u8]) -> Result<Self, AvcError> {
        let mut c = Cursor { data, pos: 0 };
        let version = c.u8()?;
        if version != 1 {
            return Err(AvcError::BadVersion(version));
        }
        let profile_indication = c.u8()?;
        let profile_compatibility = c.u8()?;
        let level_indication = c.u8()?;
        let nal_length_size = (c.u8()? & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(AvcError::BadLengthSize);
        }
        let sps_count = (c.u8()? & 0x1F) as usize;
        let sps = c.parameter_sets(sps_count)?;
        let pps_count = c.u8()? as usize;
        let pps = c.parameter_sets(pps_count)?;
        // The High-profile extension (chroma format, bit depths, SPS-ext) may follow; the
        // SPS carries the same facts, so it is not needed.
        let first_sps = sps.first().ok_or(AvcError::NoSps)?;
        if pps.is_empty() {
            return Err(AvcError::NoPps);
        }
        let info = parse_sps(first_sps)?;
        Ok(Self {
            profile_indication,
            profile_compatibility,
            level_indication,
            nal_length_size,
            sps,
            pps,
            info,
        })
    }

    /// Writes the record back (without the High-profile extension).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![
            1,
            self.profile_indication,
            self.profile_compatibility,
            self.level_indication,
            0xFC | (self.nal_length_size - 1),
            0xE0 | self.sps.len() as u8,
        ];
        for ps in &self.sps {
            out.extend_from_slice(&(ps.len() as u16).to_be_bytes());
            out.extend_from_slice(ps);
        }
        out.push(self.pps.len() as u8);
        for ps in &self.pps {
            out.extend_from_slice(&(ps.len() as u16).to_be_bytes());
            out.extend_from_slice(ps);
        }
        out
    }

    /// RFC 6381 codec string for HLS CODECS, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile_indication, self.profile_compatibility, self.level_indication
        )
    }
}

/// Width, height and frame rate of an SPS NAL unit (with its header byte), via h264-reader.
pub fn parse_sps(nal: &[u8]) -> Result<SpsInfo, AvcError> {
    if nal.first().map(|h| h & 0x1F) != Some(nal_type::SPS) {
        return Err(AvcError::BadSps("not an SPS NAL unit".into()));
    }
    let rbsp = decode_nal(nal).map_err(|e| AvcError::BadSps(e.to_string()))?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| AvcError::BadSps(format!("{e:?}")))?;
    let (width, height) = sps
        .pixel_dimensions()
        .map_err(|e| AvcError::BadSps(format!("{e:?}")))?;
    let frame_rate = sps.fps().filter(|f| f.is_finite() && *f > 0.0);
    Ok(SpsInfo {
        width,
        height,
        frame_rate,
    })
}

/// Chroma format and bit depths of an SPS (H.264 7.4.2.1.1), which the avcC of the High
/// profiles repeats: `(chroma_format_idc, bit_depth_luma, bit_depth_chroma)`.
pub fn sps_chroma(nal: &[u8]) -> Result<(u8, u8, u8), AvcError> {
    use h264_reader::nal::sps::ChromaFormat;
    let rbsp = decode_nal(nal).map_err(|e| AvcError::BadSps(e.to_string()))?;
    let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..]))
        .map_err(|e| AvcError::BadSps(format!("{e:?}")))?;
    let chroma = &sps.chroma_info;
    let format = match chroma.chroma_format {
        ChromaFormat::Monochrome => 0,
        ChromaFormat::YUV420 => 1,
        ChromaFormat::YUV422 => 2,
        ChromaFormat::YUV444 => 3,
        ChromaFormat::Invalid(v) => return Err(AvcError::BadSps(format!("chroma_format_idc {v}"))),
    };
    Ok((
        format,
        chroma.bit_depth_luma_minus8 + 8,
        chroma.bit_depth_chroma_minus8 + 8,
    ))
}

/// RFC 6381 codec string from an SPS NAL unit (profile, constraint flags, level).
pub fn codec_string_of_sps(nal: &[u8]) -> Option<String> {
    match nal {
        [header, profile, flags, level, ..] if header & 0x1F == nal_type::SPS => {
            Some(format!("avc1.{profile:02x}{flags:02x}{level:02x}"))
        }
        _ => None,
    }
}

/// Iterates over the NAL units of a length-prefixed (AVCC) access unit.
pub struct AvccNals<'a> {
    data: &'a [u8],
    pos: usize,
    length_size: usize,
}

impl<'a> AvccNals<'a> {
    pub fn new(data: &'a [u8], length_size: u8) -> Self {
        Self {
            data,
            pos: 0,
            length_size: length_size as usize,
        }
    }
}

impl<'a> Iterator for AvccNals<'a> {
    type Item = Result<&'a [u8], AvcError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let offset = self.pos;
        let Some(prefix) = rest.get(..self.length_size) else {
            self.pos = self.data.len();
            return Some(Err(AvcError::NalOverrun {
                offset,
                len: self.length_size,
                have: rest.len(),
            }));
        };
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        let body = &rest[self.length_size..];
        if len > body.len() {
            self.pos = self.data.len();
            return Some(Err(AvcError::NalOverrun {
                offset,
                len,
                have: body.len(),
            }));
        }
        self.pos += self.length_size + len;
        Some(Ok(&body[..len]))
    }
}

/// Converts one AVCC access unit to Annex B, ready for a TS: an AUD first (the
/// encoder's own AUDs are dropped, so there is exactly one), and on an IDR the SPS and PPS
/// before the first slice, so that every segment decodes on its own. Empty NAL units are
/// dropped. Returns the bytes and whether the unit holds an IDR.
pub fn avcc_to_annexb(data: &[u8], config: &AvcDecoderConfig) -> Result<(Vec<u8>, bool), AvcError> {
    length_prefixed_to_annexb(data, config.nal_length_size, config)
}

/// [`avcc_to_annexb`] with lengths of `length_size` bytes (4 in a sample-form frame,
/// whatever the publisher's record said).
pub fn length_prefixed_to_annexb(
    data: &[u8],
    length_size: u8,
    config: &AvcDecoderConfig,
) -> Result<(Vec<u8>, bool), AvcError> {
    // One pass to validate and learn what is there, so the output is sized exactly once.
    let mut count = 0usize;
    let mut payload = 0usize;
    let (mut has_idr, mut has_sps, mut has_pps) = (false, false, false);
    for nal in AvccNals::new(data, length_size) {
        let nal = nal?;
        if nal.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_NALS_PER_ACCESS_UNIT {
            return Err(AvcError::TooManyNals);
        }
        payload += START_CODE.len() + nal.len();
        match nal[0] & 0x1F {
            nal_type::IDR => has_idr = true,
            nal_type::SPS => has_sps = true,
            nal_type::PPS => has_pps = true,
            _ => {}
        }
    }
    let insert_params = has_idr && !(has_sps && has_pps);
    let params_len: usize = if insert_params {
        config
            .sps
            .iter()
            .chain(&config.pps)
            .map(|p| START_CODE.len() + p.len())
            .sum()
    } else {
        0
    };
    let mut out = Vec::with_capacity(START_CODE.len() + AUD_NAL.len() + params_len + payload);
    let emit = |out: &mut Vec<u8>, nal: &[u8]| {
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
    };
    emit(&mut out, &AUD_NAL);
    let mut params_done = !insert_params;
    for nal in AvccNals::new(data, length_size) {
        let nal = nal?;
        let Some(&header) = nal.first() else { continue };
        let kind = header & 0x1F;
        if kind == nal_type::AUD {
            continue;
        }
        // Parameter sets go right before the first slice (after AUD and SEI).
        if !params_done && (nal_type::SLICE..=nal_type::IDR).contains(&kind) {
            for ps in config.sps.iter().chain(&config.pps) {
                emit(&mut out, ps);
            }
            params_done = true;
        }
        emit(&mut out, nal);
    }
    Ok((out, has_idr))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SPS/PPS of a 320x240 High-profile stream from ffmpeg/libx264 (25 fps).
    pub const SPS_320X240_HIGH: &[u8] = &[
        0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
        0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99, 0x60,
    ];
    pub const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn record(length_size: u8, sps: &[&[u8]], pps: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![
            1,
            0x64,
            0x00,
            0x0d,
            0xFC | (length_size - 1),
            0xE0 | sps.len() as u8,
        ];
        for s in sps {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s);
        }
        out.push(pps.len() as u8);
        for p in pps {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
        }
        out
    }

    #[test]
    fn parses_record_and_sps() {
        let cfg = AvcDecoderConfig::parse(&record(4, &[SPS_320X240_HIGH], &[PPS])).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.codec_string(), "avc1.64000d");
        assert_eq!((cfg.info.width, cfg.info.height), (320, 240));
        assert_eq!(cfg.info.frame_rate, Some(25.0));
        assert_eq!(AvcDecoderConfig::parse(&cfg.to_bytes()).unwrap(), cfg);
    }

    #[test]
    fn several_parameter_sets_are_all_kept() {
        let pps2: &[u8] = &[0x68, 0xce, 0x38, 0x80];
        let cfg = AvcDecoderConfig::parse(&record(
            2,
            &[SPS_320X240_HIGH, SPS_320X240_HIGH],
            &[PPS, pps2],
        ))
        .unwrap();
        assert_eq!((cfg.sps.len(), cfg.pps.len()), (2, 2));
        assert_eq!(cfg.pps[1].as_ref(), pps2);
    }

    #[test]
    fn malformed_records_are_errors() {
        let good = record(4, &[SPS_320X240_HIGH], &[PPS]);
        for cut in 0..good.len() {
            assert!(
                AvcDecoderConfig::parse(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut v0 = good.clone();
        v0[0] = 0;
        assert_eq!(AvcDecoderConfig::parse(&v0), Err(AvcError::BadVersion(0)));
        assert_eq!(
            AvcDecoderConfig::parse(&record(3, &[SPS_320X240_HIGH], &[PPS])),
            Err(AvcError::BadLengthSize)
        );
        assert_eq!(
            AvcDecoderConfig::parse(&record(4, &[], &[PPS])),
            Err(AvcError::NoSps)
        );
        assert_eq!(
            AvcDecoderConfig::parse(&record(4, &[SPS_320X240_HIGH], &[])),
            Err(AvcError::NoPps)
        );
        assert!(matches!(
            AvcDecoderConfig::parse(&record(4, &[&[0x67, 0xFF]], &[PPS])),
            Err(AvcError::BadSps(_))
        ));
    }

    fn avcc(length_size: u8, nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            let len = (n.len() as u32).to_be_bytes();
            out.extend_from_slice(&len[4 - length_size as usize..]);
            out.extend_from_slice(n);
        }
        out
    }

    #[test]
    fn idr_gets_aud_and_parameter_sets_before_the_slice() {
        let cfg = AvcDecoderConfig::parse(&record(4, &[SPS_320X240_HIGH], &[PPS])).unwrap();
        let sei: &[u8] = &[0x06, 0x05, 0x01, 0xAA];
        let idr: &[u8] = &[0x65, 0x88, 0x84];
        let (out, key) = avcc_to_annexb(&avcc(4, &[sei, idr]), &cfg).unwrap();
        assert!(key);
        let mut want = vec![0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1];
        want.extend_from_slice(sei);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(SPS_320X240_HIGH);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(PPS);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(idr);
        assert_eq!(out, want);
    }

    #[test]
    fn two_byte_lengths_and_empty_nals() {
        let cfg = AvcDecoderConfig::parse(&record(2, &[SPS_320X240_HIGH], &[PPS])).unwrap();
        let slice: &[u8] = &[0x41, 0x9a, 0x02];
        let (out, key) = avcc_to_annexb(&avcc(2, &[&[], slice, &[]]), &cfg).unwrap();
        assert!(!key);
        assert_eq!(
            out,
            [&[0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1][..], slice].concat()
        );
    }

    #[test]
    fn one_byte_lengths_and_existing_aud_and_params_are_not_doubled() {
        let cfg = AvcDecoderConfig::parse(&record(1, &[SPS_320X240_HIGH], &[PPS])).unwrap();
        let idr: &[u8] = &[0x65, 0x01];
        let input = avcc(1, &[SPS_320X240_HIGH, PPS, &AUD_NAL, idr]);
        let (out, _) = avcc_to_annexb(&input, &cfg).unwrap();
        let starts = out.windows(4).filter(|w| *w == [0, 0, 0, 1]).count();
        assert_eq!(starts, 4, "one AUD (first), SPS, PPS, IDR");
        assert_eq!(&out[..6], &[0, 0, 0, 1, 0x09, 0xF0]);
    }

    #[test]
    fn overrunning_lengths_are_errors() {
        let cfg = AvcDecoderConfig::parse(&record(4, &[SPS_320X240_HIGH], &[PPS])).unwrap();
        assert!(matches!(
            avcc_to_annexb(&[0, 0, 0, 9, 0x65], &cfg),
            Err(AvcError::NalOverrun {
                offset: 0,
                len: 9,
                have: 1
            })
        ));
        assert!(matches!(
            avcc_to_annexb(&[0, 0], &cfg),
            Err(AvcError::NalOverrun { .. })
        ));
        assert!(matches!(
            avcc_to_annexb(&[0xFF, 0xFF, 0xFF, 0xFF], &cfg),
            Err(AvcError::NalOverrun { .. })
        ));
    }

    #[test]
    fn too_many_nals_is_an_error() {
        let cfg = AvcDecoderConfig::parse(&record(1, &[SPS_320X240_HIGH], &[PPS])).unwrap();
        let input: Vec<u8> = std::iter::repeat_n([1u8, 0x41], MAX_NALS_PER_ACCESS_UNIT + 1)
            .flatten()
            .collect();
        assert_eq!(avcc_to_annexb(&input, &cfg), Err(AvcError::TooManyNals));
    }
}
