//! AAC in RTMP: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) and ADTS framing
//! (ISO/IEC 14496-3 §1.A.2), which MPEG-TS carries (stream type 0x0F).

/// ISO/IEC 14496-3 Table 1.18: samplingFrequencyIndex -> Hz.
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];
/// Index 15: the frequency follows as an explicit 24-bit value.
const EXPLICIT_RATE_INDEX: u8 = 15;
/// Audio object types (ISO/IEC 14496-3 Table 1.17).
const AOT_ESCAPE: u8 = 31;
const AOT_SBR: u8 = 5;
const AOT_PS: u8 = 29;

/// The ADTS header without CRC.
pub const ADTS_HEADER_LEN: usize = 7;
/// frame_length is 13 bits and counts the header.
const MAX_ADTS_FRAME: usize = (1 << 13) - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacError {
    #[error("AudioSpecificConfig truncated")]
    Truncated,
    #[error("reserved sampling frequency index {0}")]
    BadSampleRateIndex(u8),
    #[error("audio object type {0} cannot be carried in ADTS (needs 1..=4)")]
    NotAdtsProfile(u8),
    #[error("sampling rate {0} Hz has no ADTS index")]
    NoAdtsRateIndex(u32),
    #[error("channel configuration 0 (program config element) is not supported")]
    ProgramConfigElement,
    #[error("reserved channel configuration {0}")]
    BadChannelConfig(u8),
    #[error("AAC frame of {0} bytes does not fit in an ADTS frame")]
    FrameTooLarge(usize),
    #[error("empty AAC frame")]
    EmptyFrame,
    #[error("AudioSpecificConfig of {0} bytes (at most {MAX_ASC_BYTES})")]
    TooLong(usize),
}

/// An AudioSpecificConfig is a few bytes; extensions keep it well under this.
pub const MAX_ASC_BYTES: usize = 64;

/// ISO/IEC 14496-3 §1.6.2.1 AudioSpecificConfig: the fields ADTS and HLS need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// As signalled: 2 = AAC-LC, 5 = HE-AAC (SBR), 29 = HE-AACv2 (PS), ...
    pub object_type: u8,
    /// The core codec's object type (2 for HE-AAC over AAC-LC); what ADTS carries.
    pub core_object_type: u8,
    /// The core sampling rate in Hz.
    pub sample_rate: u32,
    /// Index into Table 1.18 for ADTS; `None` for an explicit rate without an index.
    pub sample_rate_index: Option<u8>,
    pub channel_config: u8,
    /// The output rate with SBR (HE-AAC), when signalled explicitly.
    pub extension_sample_rate: Option<u32>,
    /// The record as sent, for the MP4 `esds` (which carries it whole).
    pub raw: bytes::Bytes,
}

/// MSB-first reader over a few bytes. Hand-written because the AudioSpecificConfig is
/// 2 to 7 bytes and five fields; a bit-stream crate would add more than it saves.
struct Bits<'a> {
    data: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn read(&mut self, n: u32) -> Result<u32, AacError> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.bit / 8).ok_or(AacError::Truncated)?;
            value = (value << 1) | u32::from((byte >> (7 - self.bit % 8)) & 1);
            self.bit += 1;
        }
        Ok(value)
    }

    fn object_type(&mut self) -> Result<u8, AacError> {
        let aot = self.read(5)? as u8;
        Ok(if aot == AOT_ESCAPE {
            32 + self.read(6)? as u8
        } else {
            aot
        })
    }

    fn sample_rate(&mut self) -> Result<(u32, Option<u8>), AacError> {
        let index = self.read(4)? as u8;
        if index == EXPLICIT_RATE_INDEX {
            let rate = self.read(24)?;
            // An explicit rate that equals a table entry can still go into ADTS.
            let index = SAMPLE_RATES
                .iter()
                .position(|r| *r == rate)
                .map(|i| i as u8);
            return Ok((rate, index));
        }
        let rate = *SAMPLE_RATES
            .get(index as usize)
            .ok_or(AacError::BadSampleRateIndex(index))?;
        Ok((rate, Some(index)))
    }
}

impl AudioSpecificConfig {
    pub fn parse(data: &[u8]) -> Result<Self, AacError> {
        if data.len() > MAX_ASC_BYTES {
            return Err(AacError::TooLong(data.len()));
        }
        let mut bits = Bits { data, bit: 0 };
        let object_type = bits.object_type()?;
        let (sample_rate, sample_rate_index) = bits.sample_rate()?;
        let channel_config = bits.read(4)? as u8;
        let mut core_object_type = object_type;
        let mut extension_sample_rate = None;
        // Explicit hierarchical SBR/PS signalling (§1.6.5.2): the extension rate, then the
        // core object type.
        if object_type == AOT_SBR || object_type == AOT_PS {
            extension_sample_rate = Some(bits.sample_rate()?.0);
            core_object_type = bits.object_type()?;
        }
        if channel_config == 0 {
            return Err(AacError::ProgramConfigElement);
        }
        if channel_config > 7 {
            return Err(AacError::BadChannelConfig(channel_config));
        }
        Ok(Self {
            object_type,
            core_object_type,
            sample_rate,
            sample_rate_index,
            channel_config,
            extension_sample_rate,
            raw: bytes::Bytes::copy_from_slice(data),
        })
    }

    /// RFC 6381 codec string for HLS CODECS: `mp4a.40.2` for AAC-LC, `mp4a.40.5` for HE-AAC.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// Channel count for the configuration (Table 1.19); 7 means 7.1 (8 channels).
    pub fn channels(&self) -> u8 {
        if self.channel_config == 7 {
            8
        } else {
            self.channel_config
        }
    }

    /// Checks that frames of this stream can be given ADTS headers.
    pub fn adts(&self) -> Result<AdtsHeader, AacError> {
        if !(1..=4).contains(&self.core_object_type) {
            return Err(AacError::NotAdtsProfile(self.core_object_type));
        }
        let index = self
            .sample_rate_index
            .ok_or(AacError::NoAdtsRateIndex(self.sample_rate))?;
        Ok(AdtsHeader {
            profile: self.core_object_type - 1,
            sample_rate_index: index,
            channel_config: self.channel_config,
        })
    }
}

/// The raw AAC frame inside an ADTS frame: what an MP4 sample carries. The header is 7
/// bytes, 9 with a CRC (`protection_absent` = 0). Anything shorter than its header is
/// returned whole (it was checked at ingest; this only strips).
pub fn adts_payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1) {
        Some(b) if b & 0x01 == 0 => ADTS_HEADER_LEN + 2,
        _ => ADTS_HEADER_LEN,
    };
    frame.get(header..).unwrap_or(frame)
}

/// The constant part of an ADTS header for one stream (ISO/IEC 14496-3 Table 1.A.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsHeader {
    /// Audio object type minus one.
    profile: u8,
    sample_rate_index: u8,
    channel_config: u8,
}

impl AdtsHeader {
    /// Appends one ADTS frame (header, no CRC, then the raw frame) to `out`.
    pub fn write_frame(&self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), AacError> {
        if raw.is_empty() {
            return Err(AacError::EmptyFrame);
        }
        let len = raw.len() + ADTS_HEADER_LEN;
        if len > MAX_ADTS_FRAME {
            return Err(AacError::FrameTooLarge(raw.len()));
        }
        out.reserve(len);
        out.extend_from_slice(&[
            0xFF,
            // syncword end, MPEG-4, layer 0, protection_absent
            0xF1,
            (self.profile << 6) | (self.sample_rate_index << 2) | (self.channel_config >> 2),
            ((self.channel_config & 0x03) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            // low bits of the length, then buffer fullness 0x7FF (VBR)
            ((len & 0x07) as u8) << 5 | 0x1F,
            // buffer fullness, one raw data block
            0xFC,
        ]);
        out.extend_from_slice(raw);
        Ok(())
    }
}

/// ADTS frames one PES may hold (encoders batch audio; FFmpeg up to a few dozen).
const MAX_ADTS_PER_PES: usize = 64;

/// The ADTS frames of a PES payload: each one's byte range and duration in 90 kHz
/// ticks. Stops at the first frame whose header does not hold up.
pub fn adts_frames(data: &[u8]) -> impl Iterator<Item = (std::ops::Range<usize>, i64)> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let h = data.get(pos..pos + ADTS_HEADER_LEN)?;
        if h[0] != 0xFF || h[1] & 0xF0 != 0xF0 {
            return None;
        }
        let len =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let rate = i64::from(*SAMPLE_RATES.get(usize::from((h[2] >> 2) & 0x0F))?);
        if len < ADTS_HEADER_LEN || pos + len > data.len() {
            return None;
        }
        let range = pos..pos + len;
        pos += len;
        Some((range, 1024 * crate::media::time::TICKS_PER_SECOND / rate))
    })
    .take(MAX_ADTS_PER_PES)
}

/// The AudioSpecificConfig an ADTS header stands for (ISO/IEC 14496-3 §1.A.2.2.1: the
/// profile is the object type minus one), for streams that carry no other (MPEG-TS).
pub fn config_of_adts(frame: &[u8]) -> Result<AudioSpecificConfig, AacError> {
    let [_, _, b2, b3, ..] = *frame else {
        return Err(AacError::Truncated);
    };
    let object_type = (b2 >> 6) + 1;
    let rate_index = (b2 >> 2) & 0x0F;
    let channels = ((b2 & 0x01) << 2) | (b3 >> 6);
    let asc = [
        (object_type << 3) | (rate_index >> 1),
        ((rate_index & 0x01) << 7) | (channels << 3),
    ];
    AudioSpecificConfig::parse(&asc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adts_frames_split_with_their_durations() {
        let frame = |n: u8| {
            let mut f = vec![0xFF, 0xF1, 0x4C, 0x80, 0x01, 0x5F, 0xFC];
            f.extend_from_slice(&[n; 3]);
            f
        };
        let mut two = frame(1);
        two.extend(frame(2));
        two.extend_from_slice(&[0xFF, 0xF1]);
        let frames: Vec<_> = adts_frames(&two).collect();
        // Index 3 = 48 kHz: 1024 samples are 1920 ticks.
        assert_eq!(frames, [(0..10, 1920), (10..20, 1920)]);
        assert_eq!(
            adts_frames(&[0xFF, 0xF1, 0x4C, 0x80, 0x7F, 0xFF, 0xFC]).count(),
            0
        );
    }

    #[test]
    fn an_adts_header_gives_back_the_config_it_was_written_from() {
        // AAC-LC 44.1 kHz stereo, and HE-AAC's core (LC 24 kHz mono) as ADTS carries it.
        for raw in [&[0x12, 0x10][..], &[0x13, 0x08]] {
            let asc = AudioSpecificConfig::parse(raw).unwrap();
            let mut frame = Vec::new();
            asc.adts()
                .unwrap()
                .write_frame(&[1, 2, 3], &mut frame)
                .unwrap();
            let back = config_of_adts(&frame).unwrap();
            assert_eq!(back.adts().unwrap(), asc.adts().unwrap());
            assert_eq!(back.channel_config, asc.channel_config);
            assert_eq!(back.sample_rate, asc.sample_rate);
        }
        assert_eq!(config_of_adts(&[0xFF, 0xF1]), Err(AacError::Truncated));
    }

    #[test]
    fn aac_lc_44100_stereo() {
        // ffmpeg -c:a aac -ar 44100 -ac 2: 00010 0100 0010 000
        let asc = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(asc.object_type, 2);
        assert_eq!(asc.sample_rate, 44100);
        assert_eq!(asc.channels(), 2);
        assert_eq!(asc.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn aac_lc_48000_mono() {
        let asc = AudioSpecificConfig::parse(&[0x11, 0x88]).unwrap();
        assert_eq!((asc.sample_rate, asc.channel_config), (48000, 1));
    }

    #[test]
    fn explicit_24_bit_frequency() {
        // AOT 2, index 15, 44100 (0x00AC44), channels 2.
        // 00010 1111 000000001010110001000100 0010 (pad)
        let asc = AudioSpecificConfig::parse(&[0x17, 0x80, 0x56, 0x22, 0x10]).unwrap();
        assert_eq!(asc.sample_rate, 44100);
        assert_eq!(asc.sample_rate_index, Some(4));
        assert_eq!(asc.channel_config, 2);
        // 44000 Hz has no ADTS index.
        let odd = AudioSpecificConfig::parse(&[0x17, 0x80, 0x55, 0xF0, 0x10]).unwrap();
        assert_eq!(odd.sample_rate, 44000);
        assert_eq!(odd.adts(), Err(AacError::NoAdtsRateIndex(44000)));
    }

    #[test]
    fn he_aac_explicit_signalling() {
        // AOT 5, core 24000 (index 6), stereo, extension 48000 (index 3), core AOT 2.
        // 00101 0110 0010 0011 00010 (pad 000)
        let asc = AudioSpecificConfig::parse(&[0x2B, 0x11, 0x88]).unwrap();
        assert_eq!(asc.object_type, 5);
        assert_eq!(asc.core_object_type, 2);
        assert_eq!(asc.sample_rate, 24000);
        assert_eq!(asc.extension_sample_rate, Some(48000));
        assert_eq!(asc.codec_string(), "mp4a.40.5");
        assert!(asc.adts().is_ok());
    }

    #[test]
    fn escaped_object_type() {
        // AOT 31 + 6 bits (10 -> 42, USAC), index 4, stereo.
        // 11111 001010 0100 0010
        let asc = AudioSpecificConfig::parse(&[0xF9, 0x48, 0x40]).unwrap();
        assert_eq!(asc.object_type, 42);
        assert_eq!(asc.adts(), Err(AacError::NotAdtsProfile(42)));
    }

    #[test]
    fn malformed_configs() {
        assert_eq!(AudioSpecificConfig::parse(&[]), Err(AacError::Truncated));
        assert_eq!(
            AudioSpecificConfig::parse(&[0x12]),
            Err(AacError::Truncated)
        );
        // index 13 is reserved
        assert_eq!(
            AudioSpecificConfig::parse(&[0x16, 0x90]),
            Err(AacError::BadSampleRateIndex(13))
        );
        assert_eq!(
            AudioSpecificConfig::parse(&[0x12, 0x00]),
            Err(AacError::ProgramConfigElement)
        );
    }

    #[test]
    fn adts_header_fields() {
        let adts = AudioSpecificConfig::parse(&[0x12, 0x10])
            .unwrap()
            .adts()
            .unwrap();
        let mut out = Vec::new();
        adts.write_frame(&[0xAB; 100], &mut out).unwrap();
        // Profile LC (1), index 4, channels 2, length 107: worked out from Table 1.A.5.
        assert_eq!(&out[..7], &[0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]);
        assert_eq!(out.len(), 107);
        let frame_len =
            ((out[3] as usize & 3) << 11) | ((out[4] as usize) << 3) | (out[5] as usize >> 5);
        assert_eq!(frame_len, 107);
    }

    #[test]
    fn adts_limits() {
        let adts = AudioSpecificConfig::parse(&[0x12, 0x10])
            .unwrap()
            .adts()
            .unwrap();
        let mut out = Vec::new();
        assert_eq!(adts.write_frame(&[], &mut out), Err(AacError::EmptyFrame));
        assert!(
            adts.write_frame(&[0; MAX_ADTS_FRAME - ADTS_HEADER_LEN], &mut out)
                .is_ok()
        );
        assert_eq!(
            adts.write_frame(&[0; MAX_ADTS_FRAME - ADTS_HEADER_LEN + 1], &mut out),
            Err(AacError::FrameTooLarge(8185))
        );
    }
}
