//! Reads facts back out of an MPEG-TS segment: the SPS of its first video access unit,
//! which gives an encoded rung's real CODECS and RESOLUTION for the master playlist.

use super::avc::nal_type;

const PACKET: usize = 188;
/// An SPS is in the first access unit; a few dozen packets is plenty.
const MAX_PES_BYTES: usize = 64 * 1024;

/// The first H.264 SPS NAL unit (with its header byte) in `ts`, if any.
pub fn first_sps(ts: &[u8]) -> Option<Vec<u8>> {
    let mut video_pid = None;
    let mut pes = Vec::new();
    for packet in ts.chunks_exact(PACKET) {
        if packet[0] != 0x47 {
            return None;
        }
        let pid = u16::from_be_bytes([packet[1] & 0x1F, packet[2]]);
        let unit_start = packet[1] & 0x40 != 0;
        let control = (packet[3] >> 4) & 0x3;
        let mut payload = &packet[4..];
        if control & 0x2 != 0 {
            let af_len = *payload.first()? as usize;
            payload = payload.get(1 + af_len..)?;
        }
        if control & 0x1 == 0 {
            continue;
        }
        match video_pid {
            None if unit_start
                && payload.len() > 4
                && payload[..3] == [0, 0, 1]
                && payload[3] & 0xF0 == 0xE0 =>
            {
                video_pid = Some(pid);
                pes.extend_from_slice(payload);
            }
            Some(p) if p == pid => {
                if unit_start {
                    break;
                }
                pes.extend_from_slice(payload);
                if pes.len() > MAX_PES_BYTES {
                    break;
                }
            }
            _ => {}
        }
    }
    let header_len = 9 + *pes.get(8)? as usize;
    let es = pes.get(header_len..)?;
    annexb_nals(es)
        .find(|n| n.first().map(|h| h & 0x1F) == Some(nal_type::SPS))
        .map(<[u8]>::to_vec)
}

/// NAL units of an Annex B byte stream (3- or 4-byte start codes).
fn annexb_nals(es: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= es.len() {
        if es[i] == 0 && es[i + 1] == 0 && es[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            // Trim the zero of a 4-byte start code off the previous NAL.
            let mut end = s - 3;
            while end > 0 && es[end - 1] == 0 {
                end -= 1;
            }
            end
        })
        .chain(std::iter::once(es.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &es[s..e])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::remux::remux_flv_to_ts;

    #[test]
    fn finds_the_sps_kawa_muxed() {
        let flv = include_bytes!("../../tests/fixtures/high_bframes_aac48k_mono.flv");
        let mut ts = Vec::new();
        remux_flv_to_ts(flv, &mut ts).unwrap();
        let sps = first_sps(&ts).unwrap();
        assert_eq!(
            crate::media::avc::codec_string_of_sps(&sps).as_deref(),
            Some("avc1.64000b")
        );
        let info = crate::media::avc::parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (160, 120));
    }

    #[test]
    fn garbage_has_no_sps() {
        assert_eq!(first_sps(b"not a transport stream at all"), None);
        assert_eq!(first_sps(&[0x47; 188 * 3]), None);
        assert_eq!(first_sps(&[]), None);
    }
}
