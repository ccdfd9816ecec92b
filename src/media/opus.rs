//! Opus packets out of MPEG-TS, in the Opus mapping FFmpeg's muxer writes (a private
//! stream with an `Opus` registration descriptor): each access unit in a PES payload starts with a control
//! header (`0x7FE` in 11 bits, trim and extension flags), then its size as a run of
//! 0xFF bytes plus a last byte, then the optional trims and extension, then the packet.
//! Kawa's FFmpeg writes WebRTC's audio this way beside the rungs' video.
//!
//! Written by hand: no crate reads this framing, and it is a few lines. Pure: bytes in,
//! packets out; every size read is checked against what is there.

use bytes::Bytes;

/// Samples per second of every Opus stream's RTP clock.
pub const RTP_CLOCK: i64 = 48_000;

/// One Opus packet and when it plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// Presentation time, 90 kHz, unwrapped.
    pub pts: i64,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpusTsError {
    #[error("an Opus access unit does not start with the control header 0x7FE")]
    NoControlHeader,
    #[error("an Opus control header is cut short")]
    Truncated,
}

/// The Opus packets of one PES payload, in order.
pub fn ts_access_units(payload: &Bytes) -> Result<Vec<Bytes>, OpusTsError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let header = payload.get(at..at + 2).ok_or(OpusTsError::Truncated)?;
        if header[0] != 0x7F || header[1] & 0xE0 != 0xE0 {
            return Err(OpusTsError::NoControlHeader);
        }
        let (start_trim, end_trim, extension) = (
            header[1] & 0x10 != 0,
            header[1] & 0x08 != 0,
            header[1] & 0x04 != 0,
        );
        at += 2;
        let mut size = 0usize;
        loop {
            let byte = *payload.get(at).ok_or(OpusTsError::Truncated)?;
            at += 1;
            size += usize::from(byte);
            if byte != 0xFF {
                break;
            }
        }
        at += 2 * usize::from(start_trim) + 2 * usize::from(end_trim);
        if extension {
            let len = *payload.get(at).ok_or(OpusTsError::Truncated)?;
            at += 1 + usize::from(len);
        }
        let end = at.checked_add(size).ok_or(OpusTsError::Truncated)?;
        if end > payload.len() {
            return Err(OpusTsError::Truncated);
        }
        out.push(payload.slice(at..end));
        at = end;
    }
    Ok(out)
}

/// How long `packet` plays, in 48 kHz samples (RFC 6716 section 3.1: the TOC byte's
/// configuration gives the frame length, its code the frame count). 0 when malformed.
pub fn samples(packet: &[u8]) -> u32 {
    let Some(&toc) = packet.first() else {
        return 0;
    };
    let config = toc >> 3;
    // Frame lengths in 1/400 s (2.5 ms) units.
    let frame = match config {
        0..=11 => [4, 8, 16, 24][usize::from(config % 4)],
        12..=15 => [4, 8][usize::from(config % 2)],
        _ => [1, 2, 4, 8][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => packet.get(1).map_or(0, |b| u32::from(b & 0x3F)),
    };
    frame * frames * 120
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_units_are_split_with_trims_and_long_sizes() {
        // FFmpeg's first AU: start trim 312, 300 bytes (0xFF + 0x2D).
        let mut payload = vec![0x7F, 0xF0, 0xFF, 0x2D, 0x01, 0x38];
        payload.extend(std::iter::repeat_n(0xF8, 300));
        // A second one without trims, 3 bytes.
        payload.extend([0x7F, 0xE0, 0x03, 0xFC, 1, 2]);
        let units = ts_access_units(&Bytes::from(payload)).unwrap();
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].len(), 300);
        assert_eq!(&units[1][..], [0xFC, 1, 2]);
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [
            &[0x7F][..],
            &[0x00, 0xE0, 1, 0],
            &[0x7F, 0xE0, 0xFF],
            &[0x7F, 0xE0, 5, 1],
            &[0x7F, 0xF4, 1],
        ] {
            assert!(ts_access_units(&Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn durations_follow_the_toc() {
        // CELT fullband 20 ms, one frame (what libopus writes by default).
        assert_eq!(samples(&[0xF8]), 960);
        // SILK wideband 60 ms.
        assert_eq!(samples(&[(11 << 3)]), 2880);
        // Two 10 ms CELT frames.
        assert_eq!(samples(&[(30 << 3) | 1]), 960);
        // Code 3 with 3 frames of 2.5 ms.
        assert_eq!(samples(&[(16 << 3) | 3, 3]), 360);
        assert_eq!(samples(&[]), 0);
    }
}
