//! CMAF (fragmented MP4, ISO/IEC 23000-19 over ISO/IEC 14496-12) for HLS: the init
//! segment (`ftyp` + `moov` with `avc1`/`avcC` and `mp4a`/`esds`) and media fragments
//! (`moof` + `mdat`, with `tfdt` and a `trun` carrying signed composition offsets).
//!
//! The boxes come from `mp4-atom`; this file only decides their contents. Both tracks
//! use the 90 kHz clock frames carry, so every PTS and DTS goes into the file exactly.

use bytes::Bytes;
use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
use mp4_atom::{
    Atom, Audio, Av01, Avc1, Avcc, AvccExt, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Header, Hvc1,
    Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd,
    Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd, u24,
};

use super::aac::AudioSpecificConfig;
use super::avc::{AvcDecoderConfig, sps_chroma};
use super::frame::VideoConfig;
use super::time::TICKS_PER_SECOND;

/// The timescale of both tracks: MPEG-TS's 90 kHz, in which frames carry their times.
pub const TIMESCALE: u32 = TICKS_PER_SECOND as u32;

/// ISO/IEC 14496-12 §8.8.3.1 sample flags: an I-frame, or a frame that depends on others
/// and is not a sync sample.
const FLAGS_SYNC: u32 = 0x0200_0000;
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// The avcC of these profiles carries chroma format and bit depths (ISO/IEC 14496-15
/// §5.3.3.1.2).
const HIGH_PROFILES: [u8; 9] = [100, 110, 122, 144, 44, 83, 86, 118, 128];

#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("MP4 box cannot be written: {0}")]
    Box(#[from] mp4_atom::Error),
    #[error("picture of {0}x{1} does not fit an MP4 sample entry")]
    PictureTooLarge(u32, u32),
    #[error("audio sample rate {0} Hz does not fit an MP4 sample entry")]
    SampleRate(u32),
}

/// The track IDs of a rendition: video is track 1; audio is 2 beside video, else 1.
pub fn track_ids(has_video: bool, has_audio: bool) -> (Option<u32>, Option<u32>) {
    match (has_video, has_audio) {
        (true, true) => (Some(1), Some(2)),
        (true, false) => (Some(1), None),
        (false, true) => (None, Some(1)),
        (false, false) => (None, None),
    }
}

/// The init segment of a rendition with these tracks.
pub fn init_segment(
    video: Option<&VideoConfig>,
    audio: Option<&AudioSpecificConfig>,
) -> Result<Vec<u8>, Fmp4Error> {
    let (video_id, audio_id) = track_ids(video.is_some(), audio.is_some());
    let mut trak = Vec::new();
    if let (Some(config), Some(id)) = (video, video_id) {
        trak.push(video_trak(id, config)?);
    }
    if let (Some(asc), Some(id)) = (audio, audio_id) {
        trak.push(audio_trak(id, asc)?);
    }
    let trex = trak
        .iter()
        .map(|t| Trex {
            track_id: t.tkhd.track_id,
            default_sample_description_index: 1,
            ..Default::default()
        })
        .collect();
    let moov = Moov {
        mvhd: Mvhd {
            timescale: TIMESCALE,
            rate: 1u16.into(),
            volume: 1u8.into(),
            next_track_id: trak.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    };
    let mut compatible_brands = vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()];
    if let Some(VideoConfig::Av1(_)) = video {
        // AV1-ISOBMFF §2.1: files with AV1 tracks list `av01`.
        compatible_brands.push(b"av01".into());
    }
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands,
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out)
}

fn media(handler: &[u8; 4], name: &str, minf: Minf) -> Mdia {
    Mdia {
        mdhd: Mdhd {
            timescale: TIMESCALE,
            language: "und".into(),
            ..Default::default()
        },
        hdlr: Hdlr {
            handler: handler.into(),
            name: name.into(),
        },
        minf,
    }
}

fn sample_table(entry: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![entry],
        },
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn data_information() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn video_trak(track_id: u32, config: &VideoConfig) -> Result<Trak, Fmp4Error> {
    let (width, height) = (config.info().width, config.info().height);
    let too_large = || Fmp4Error::PictureTooLarge(width, height);
    let (w16, h16) = (
        u16::try_from(width).map_err(|_| too_large())?,
        u16::try_from(height).map_err(|_| too_large())?,
    );
    let visual = Visual {
        data_reference_index: 1,
        width: w16,
        height: h16,
        ..Default::default()
    };
    let entry: mp4_atom::Codec = match config {
        VideoConfig::Avc(avc) => avc1(visual, avc).into(),
        // The record as the encoder sent it, with the parameter sets in it (`hvc1`,
        // not `hev1`: Apple plays only parameter sets in the sample entry).
        VideoConfig::Hevc(hevc) => Hvc1 {
            visual,
            hvcc: hevc.hvcc.clone(),
            ..Default::default()
        }
        .into(),
        VideoConfig::Av1(av1) => Av01 {
            visual,
            av1c: av1.av1c.clone(),
            ..Default::default()
        }
        .into(),
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            width: w16.into(),
            height: h16.into(),
            ..Default::default()
        },
        mdia: media(
            b"vide",
            "Kawa video",
            Minf {
                vmhd: Some(Vmhd::default()),
                dinf: data_information(),
                stbl: sample_table(entry),
                ..Default::default()
            },
        ),
        ..Default::default()
    })
}

fn avc1(visual: Visual, config: &AvcDecoderConfig) -> Avc1 {
    let ext = HIGH_PROFILES.contains(&config.profile_indication).then(|| {
        let (chroma_format, bit_depth_luma, bit_depth_chroma) = config
            .sps
            .first()
            .and_then(|sps| sps_chroma(sps).ok())
            .unwrap_or((1, 8, 8));
        AvccExt {
            chroma_format,
            bit_depth_luma,
            bit_depth_chroma,
            sequence_parameter_sets_ext: Vec::new(),
        }
    });
    let avcc = Avcc {
        configuration_version: 1,
        avc_profile_indication: config.profile_indication,
        profile_compatibility: config.profile_compatibility,
        avc_level_indication: config.level_indication,
        length_size: 4,
        sequence_parameter_sets: config.sps.iter().map(|s| s.to_vec()).collect(),
        picture_parameter_sets: config.pps.iter().map(|p| p.to_vec()).collect(),
        ext,
    };
    Avc1 {
        visual,
        avcc,
        ..Default::default()
    }
}

fn audio_trak(track_id: u32, asc: &AudioSpecificConfig) -> Result<Trak, Fmp4Error> {
    let rate = asc.extension_sample_rate.unwrap_or(asc.sample_rate);
    let rate16 = u16::try_from(rate).map_err(|_| Fmp4Error::SampleRate(rate))?;
    let entry = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(asc.channels()),
            sample_size: 16,
            sample_rate: rate16.into(),
        },
        esds: Esds {
            es_desc: EsDescriptor {
                es_id: track_id as u16,
                dec_config: DecoderConfig {
                    // MPEG-4 Audio, an audio stream.
                    object_type_indication: 0x40,
                    stream_type: 0x05,
                    up_stream: 0,
                    buffer_size_db: u24::from([0u8; 3]),
                    max_bitrate: 0,
                    avg_bitrate: 0,
                    dec_specific: Some(DecoderSpecific {
                        raw: asc.raw.to_vec(),
                        ..Default::default()
                    }),
                },
                sl_config: SLConfig {},
                ..Default::default()
            },
        },
        btrt: None,
        taic: None,
    };
    Ok(Trak {
        tkhd: Tkhd {
            track_id,
            enabled: true,
            in_movie: true,
            volume: 1u8.into(),
            alternate_group: 1,
            ..Default::default()
        },
        mdia: media(
            b"soun",
            "Kawa audio",
            Minf {
                smhd: Some(Smhd::default()),
                dinf: data_information(),
                stbl: sample_table(entry.into()),
                ..Default::default()
            },
        ),
        ..Default::default()
    })
}

/// One sample of a track fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleInfo {
    /// 90 kHz ticks.
    pub duration: u32,
    pub size: u32,
    /// A sync sample (IDR frame; every AAC frame).
    pub sync: bool,
    /// PTS minus DTS, 90 kHz.
    pub composition_offset: i32,
}

/// The samples of one track in one fragment, and their bytes in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFragment {
    pub track_id: u32,
    /// DTS of the first sample, 90 kHz.
    pub base_decode_time: u64,
    pub samples: Vec<SampleInfo>,
    /// The samples' bytes, in order: slices of the frames they came from, copied only
    /// into the fragment.
    pub data: Vec<Bytes>,
}

impl TrackFragment {
    fn data_len(&self) -> usize {
        self.data.iter().map(Bytes::len).sum()
    }
}

/// A `moof` + `mdat` pair: the tracks' samples, each track's bytes one run in the mdat.
pub fn media_fragment(sequence: u32, tracks: &[TrackFragment]) -> Result<Vec<u8>, Fmp4Error> {
    let traf = tracks
        .iter()
        .map(|t| Traf {
            tfhd: Tfhd {
                track_id: t.track_id,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: t.base_decode_time,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(
                    t.samples
                        .iter()
                        .map(|s| TrunEntry {
                            duration: Some(s.duration),
                            size: Some(s.size),
                            flags: Some(if s.sync { FLAGS_SYNC } else { FLAGS_NON_SYNC }),
                            cts: Some(i64::from(s.composition_offset)),
                        })
                        .collect(),
                ),
            }],
            ..Default::default()
        })
        .collect();
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf,
    };
    // Data offsets count from the moof's first byte, so its size must be known first:
    // encode once with placeholders of the same width, then fill them in.
    let mut sizing = Vec::with_capacity(256);
    moof.encode(&mut sizing)?;
    let payload: usize = tracks.iter().map(TrackFragment::data_len).sum();
    let mdat_header = Header {
        kind: Mdat::KIND,
        size: Some(payload),
    };
    let mut header = Vec::with_capacity(16);
    mdat_header.encode(&mut header)?;
    let mut offset = sizing.len() + header.len();
    for (traf, track) in moof.traf.iter_mut().zip(tracks) {
        if let Some(run) = traf.trun.first_mut() {
            run.data_offset = Some(offset as i32);
        }
        offset += track.data_len();
    }
    let mut out = Vec::with_capacity(sizing.len() + header.len() + payload);
    moof.encode(&mut out)?;
    out.extend_from_slice(&header);
    for piece in tracks.iter().flat_map(|t| &t.data) {
        out.extend_from_slice(piece);
    }
    Ok(out)
}
