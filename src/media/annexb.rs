//! H.264 Annex B access units (what frames carry, and what FFmpeg writes into a TS) to
//! what MP4 samples carry: length-prefixed NAL units (ISO/IEC 14496-15 §5.3), with the
//! parameter sets moved to the init segment's avcC.

use bytes::Bytes;

use super::avc::{AvcDecoderConfig, AvcError, nal_type, parse_sps};

/// Iterates over the NAL units of an Annex B access unit (3- or 4-byte start codes).
/// Bytes before the first start code are skipped; empty units are not yielded.
pub struct AnnexBNals<'a> {
    rest: &'a [u8],
}

impl<'a> AnnexBNals<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let rest = match find_start_code(data) {
            Some((_, body)) => &data[body..],
            None => &[],
        };
        Self { rest }
    }
}

/// The position of the first start code in `data`, and where the NAL unit after it
/// begins.
fn find_start_code(data: &[u8]) -> Option<(usize, usize)> {
    // memchr's SIMD search: every byte of every frame passes through here.
    let i = memchr::memmem::find(data, &[0, 0, 1])?;
    let start = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
    Some((start, i + 3))
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (nal, rest) = match find_start_code(self.rest) {
                Some((end, next)) => (&self.rest[..end], &self.rest[next..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            // Trailing zero bytes belong to no NAL unit (H.264 B.1.1).
            let len = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            if len > 0 {
                return Some(&nal[..len]);
            }
        }
    }
}

/// One access unit as an MP4 sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcSample {
    /// 4-byte length prefixes, without AUD, SPS and PPS.
    pub data: Vec<u8>,
    /// Holds an IDR slice.
    pub idr: bool,
}

/// Converts an Annex B access unit to a length-prefixed sample. AUDs are dropped (MP4
/// has sample boundaries), and so are SPS and PPS (the init segment's avcC carries them;
/// a change of them starts a new init segment).
pub fn to_sample(access_unit: &[u8]) -> AvcSample {
    let mut data = Vec::with_capacity(access_unit.len());
    let idr = append_sample(access_unit, &mut data);
    AvcSample { data, idr }
}

/// [`to_sample`] appending to `out` (an `mdat` being built: no copy in between);
/// whether the access unit holds an IDR slice.
pub fn append_sample(access_unit: &[u8], out: &mut Vec<u8>) -> bool {
    let mut idr = false;
    for nal in AnnexBNals::new(access_unit) {
        match nal[0] & 0x1F {
            nal_type::AUD | nal_type::SPS | nal_type::PPS => continue,
            nal_type::IDR => idr = true,
            _ => {}
        }
        // A NAL unit inside one access unit cannot reach 4 GiB: the frame is capped far
        // below that at ingest and in the TS demuxer.
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    idr
}

/// Whether the access unit holds an IDR slice.
pub fn has_idr(access_unit: &[u8]) -> bool {
    AnnexBNals::new(access_unit).any(|nal| nal[0] & 0x1F == nal_type::IDR)
}

/// The decoder configuration an encoder sent in-band (FFmpeg's rungs repeat SPS and PPS
/// before every IDR), as an avcC record would give it.
pub fn decoder_config(access_unit: &[u8]) -> Result<AvcDecoderConfig, AvcError> {
    let mut sps = Vec::new();
    let mut pps = Vec::new();
    for nal in AnnexBNals::new(access_unit) {
        match nal[0] & 0x1F {
            nal_type::SPS if sps.is_empty() => sps.push(Bytes::copy_from_slice(nal)),
            nal_type::PPS if pps.is_empty() => pps.push(Bytes::copy_from_slice(nal)),
            _ => {}
        }
    }
    let first = sps.first().ok_or(AvcError::NoSps)?;
    if pps.is_empty() {
        return Err(AvcError::NoPps);
    }
    let [
        _,
        profile_indication,
        profile_compatibility,
        level_indication,
        ..,
    ] = first[..]
    else {
        return Err(AvcError::BadSps("SPS shorter than its fixed header".into()));
    };
    let info = parse_sps(first)?;
    Ok(AvcDecoderConfig {
        profile_indication,
        profile_compatibility,
        level_indication,
        nal_length_size: 4,
        sps,
        pps,
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::avc::tests::{PPS, SPS_320X240_HIGH};

    fn annexb(nals: &[&[u8]], four_byte: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            if four_byte {
                out.push(0);
            }
            out.extend_from_slice(&[0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }

    #[test]
    fn splits_on_three_and_four_byte_start_codes() {
        let mut data = annexb(&[&[0x09, 0xF0], &[0x65, 1, 2, 3]], true);
        data.extend_from_slice(&[0, 0, 1, 0x41, 9, 0, 0]);
        let nals: Vec<&[u8]> = AnnexBNals::new(&data).collect();
        assert_eq!(nals, [&[0x09, 0xF0][..], &[0x65, 1, 2, 3], &[0x41, 9]]);
        assert_eq!(AnnexBNals::new(&[1, 2, 3]).count(), 0);
        assert_eq!(AnnexBNals::new(&[]).count(), 0);
        assert_eq!(AnnexBNals::new(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn samples_leave_out_delimiters_and_parameter_sets() {
        let au = annexb(
            &[
                &[0x09, 0xF0],
                SPS_320X240_HIGH,
                PPS,
                &[0x06, 5],
                &[0x65, 0xAA],
            ],
            true,
        );
        let sample = to_sample(&au);
        assert!(sample.idr);
        assert_eq!(sample.data, [0, 0, 0, 2, 0x06, 5, 0, 0, 0, 2, 0x65, 0xAA]);
        let p = to_sample(&annexb(&[&[0x41, 1]], false));
        assert!(!p.idr && !has_idr(&annexb(&[&[0x41, 1]], false)));
        let config = decoder_config(&au).unwrap();
        assert_eq!(config.sps[0].as_ref(), SPS_320X240_HIGH);
        assert_eq!(config.pps[0].as_ref(), PPS);
        assert_eq!((config.info.width, config.info.height), (320, 240));
        assert_eq!(config.codec_string(), "avc1.64000d");
        assert_eq!(
            decoder_config(&annexb(&[&[0x65, 1]], true)),
            Err(AvcError::NoSps)
        );
    }
}
