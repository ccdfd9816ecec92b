//! The pure media core: bytes in, typed values or bytes out, `Result` on anything
//! malformed. No sockets, no actors, no async.
//!
//! - [`flv`]: FLV tag bodies (what RTMP video/audio messages carry) and FLV files.
//! - [`flv_ex`]: enhanced RTMP video tags (FourCC codecs, ModEx, multitrack).
//! - [`avc`]: AVCDecoderConfigurationRecord, SPS facts, AVCC -> Annex B.
//! - [`hevc`]: HEVCDecoderConfigurationRecord, SPS size, CODECS string.
//! - [`av1`]: AV1CodecConfigurationRecord, sequence header size, OBUs to samples.
//! - [`aac`]: AudioSpecificConfig and ADTS headers.
//! - [`time`]: RTMP millisecond timestamps -> unwrapped 90 kHz.
//! - [`frame`]: the typed frames and configs actors pass around.
//! - [`chunks`]: bytes kept as the pieces they were made in (a segment's parts).
//! - [`demux`]: payloads -> frames, the path shared by ingest and `kawa tools remux`.
//! - [`ts`]: the MPEG-TS muxer FFmpeg is fed with.
//! - [`ts_demux`]: the MPEG-TS demuxer FFmpeg's encoded rungs (and SRT's TS) go through.
//! - [`interleave`]: two tracks' frames back in time order (TS muxers batch audio).
//! - [`ts_ingest`]: a publisher's MPEG-TS (SRT) -> frames, as [`demux`] does for RTMP.
//! - [`annexb`]: Annex B access units to MP4 samples, and in-band parameter sets.
//! - [`fmp4`]: CMAF init segments and fragments.
//! - [`fmp4_feed`]: frames as fragmented MP4 for FFmpeg's stdin (AV1, which TS cannot
//!   carry to FFmpeg 5.1).
//! - [`cmaf`]: frames cut into CMAF parts and segments.
//! - [`sample`]: H.264/HEVC access units in MP4 sample form (RTMP's AVCC passed through),
//!   and to Annex B for what reads that.
//! - [`remux`]: FLV file -> MPEG-TS, for `kawa tools remux` and the benchmark.

pub mod aac;
pub mod annexb;
pub mod av1;
pub mod avc;
pub mod chunks;
pub mod cmaf;
pub mod demux;
pub mod flv;
pub mod flv_ex;
pub mod fmp4;
pub mod fmp4_feed;
pub mod frame;
pub mod hevc;
pub mod interleave;
pub mod opus;
pub mod remux;
pub mod sample;
pub mod time;
pub mod ts;
pub mod ts_demux;
pub mod ts_ingest;
