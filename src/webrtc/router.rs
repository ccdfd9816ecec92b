//! The WebRTC server's front: one thread reads the UDP port and hands each datagram to
//! the shard that holds its viewer. A new viewer's first datagrams are STUN binding
//! requests whose USERNAME starts with the user name fragment Kawa gave it (its shard
//! recorded which); later ones (DTLS, SRTP, RTCP) come from the address its STUN came
//! from. Anything else is dropped here, unread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::server::{Command, Shared};

/// The largest datagram read (a browser's stay well under 1500 bytes).
const DATAGRAM: usize = 2048;
/// A source not heard from for this long is forgotten.
const FORGET: Duration = Duration::from_secs(60);
/// STUN's magic cookie (RFC 5389).
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// The local user name fragment a STUN message names in its USERNAME attribute
/// (`local:remote`), when `datagram` is STUN and has one. Walks at most the message's
/// own length, attribute by attribute.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let (header, mut attributes) = (datagram.get(..20)?, datagram.get(20..)?);
    if header[0] & 0xC0 != 0 || header[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    attributes = attributes.get(..length)?;
    while let [t0, t1, l0, l1, rest @ ..] = attributes {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let value = rest.get(..len)?;
        if [*t0, *t1] == [0x00, 0x06] {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        // Attributes are padded to four bytes.
        attributes = rest.get(len.next_multiple_of(4)..)?;
    }
    None
}

pub async fn run(socket: UdpSocket, shared: Arc<Shared>, shards: Vec<mpsc::Sender<Command>>) {
    let mut buf = vec![0u8; DATAGRAM];
    let mut sources: HashMap<SocketAddr, (usize, Instant)> = HashMap::new();
    let mut swept = Instant::now();
    loop {
        let Ok((n, source)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let now = Instant::now();
        let bytes = &buf[..n];
        let by_name =
            stun_local_ufrag(bytes).and_then(|ufrag| shared.lock_ufrags().get(ufrag).copied());
        let shard = match by_name {
            Some(shard) => {
                sources.insert(source, (shard, now));
                shard
            }
            None => match sources.get_mut(&source) {
                Some((shard, seen)) => {
                    *seen = now;
                    *shard
                }
                None => continue,
            },
        };
        let command = Command::Datagram {
            bytes: bytes.to_vec(),
            source,
        };
        // A shard that is behind loses the datagram, as a full socket would.
        let _ = shards[shard].try_send(command);
        if now.duration_since(swept) > FORGET / 6 {
            sources.retain(|_, (_, seen)| now.duration_since(*seen) < FORGET);
            swept = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(attributes: &[u8]) -> Vec<u8> {
        let mut m = vec![0x00, 0x01];
        m.extend((attributes.len() as u16).to_be_bytes());
        m.extend(MAGIC_COOKIE);
        m.extend([7; 12]);
        m.extend(attributes);
        m
    }

    #[test]
    fn the_local_ufrag_comes_from_the_username_attribute() {
        // PRIORITY (padded to 4), then USERNAME "abcd:wxyz" (9 bytes, padded to 12).
        let mut attributes = vec![0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4];
        attributes.extend([0x00, 0x06, 0x00, 0x09]);
        attributes.extend(b"abcd:wxyz\0\0\0");
        assert_eq!(stun_local_ufrag(&stun(&attributes)), Some("abcd"));
    }

    #[test]
    fn other_datagrams_and_broken_stun_name_nothing() {
        // DTLS and RTP start with bytes STUN never does.
        assert_eq!(stun_local_ufrag(&[0x16; 40]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        // A length past the end, an attribute past the message.
        let mut long = stun(&[0x00, 0x06, 0x00, 0x40, b'a']);
        assert_eq!(stun_local_ufrag(&long), None);
        long[3] = 200;
        assert_eq!(stun_local_ufrag(&long), None);
        assert_eq!(stun_local_ufrag(&stun(&[])), None);
        assert_eq!(stun_local_ufrag(&[0; 19]), None);
    }
}
