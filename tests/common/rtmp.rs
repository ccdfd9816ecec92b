//! A real RTMP client (rml_rtmp's) on a tokio socket: for peers that must send exactly
//! what a test chooses, which ffmpeg cannot be told to.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection from `source` (any 127.0.0.0/8 address is this machine) that has done
/// a real RTMP handshake; returns the bytes the server sent after it.
pub async fn handshaken(
    server: SocketAddr,
    source: IpAddr,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(server).await?;
    let mut handshake = Handshake::new(PeerType::Client);
    stream
        .write_all(&handshake.generate_outbound_p0_and_p1().unwrap())
        .await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match handshake.process_bytes(&buf[..n]).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                return Ok((stream, remaining_bytes));
            }
        }
    }
}

fn outbound(
    results: Vec<ClientSessionResult>,
    out: &mut Vec<u8>,
    events: &mut Vec<ClientSessionEvent>,
) {
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => out.extend(p.bytes),
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            _ => {}
        }
    }
}

/// A publisher that sends FLV tag bodies as RTMP messages.
pub struct RtmpPublisher {
    stream: TcpStream,
    session: ClientSession,
}

impl RtmpPublisher {
    /// Connects to app `live` and publishes with `key`, waiting for both to be accepted.
    pub async fn start(server: SocketAddr, key: &str) -> Self {
        let (stream, leftover) = handshaken(server, IpAddr::from([127, 0, 0, 1]))
            .await
            .expect("RTMP handshake");
        let (mut session, results) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut out = Vec::new();
        let mut events = Vec::new();
        outbound(results, &mut out, &mut events);
        outbound(
            session.handle_input(&leftover).unwrap(),
            &mut out,
            &mut events,
        );
        let request = session.request_connection("live".into()).unwrap();
        outbound(vec![request], &mut out, &mut events);
        let mut this = Self { stream, session };
        this.until(&mut out, |e| {
            matches!(e, ClientSessionEvent::ConnectionRequestAccepted)
        })
        .await;
        let request = this
            .session
            .request_publishing(key.into(), PublishRequestType::Live)
            .unwrap();
        outbound(vec![request], &mut out, &mut Vec::new());
        this.until(&mut out, |e| {
            matches!(e, ClientSessionEvent::PublishRequestAccepted)
        })
        .await;
        this
    }

    /// Sends `out`, then reads and answers until an event matching `done` arrives.
    async fn until(&mut self, out: &mut Vec<u8>, done: impl Fn(&ClientSessionEvent) -> bool) {
        let mut buf = vec![0u8; 8192];
        loop {
            if !out.is_empty() {
                self.stream.write_all(out).await.unwrap();
                out.clear();
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.stream.read(&mut buf),
            )
            .await
            .expect("the server answers")
            .unwrap();
            assert!(n > 0, "the server closed the connection");
            let mut events = Vec::new();
            outbound(
                self.session.handle_input(&buf[..n]).unwrap(),
                out,
                &mut events,
            );
            if events.iter().any(&done) {
                if !out.is_empty() {
                    self.stream.write_all(out).await.unwrap();
                    out.clear();
                }
                return;
            }
        }
    }

    pub async fn video(&mut self, timestamp_ms: u32, body: &[u8]) {
        let packet = self
            .session
            .publish_video_data(
                Bytes::copy_from_slice(body),
                RtmpTimestamp::new(timestamp_ms),
                false,
            )
            .unwrap();
        self.send(packet).await;
    }

    pub async fn audio(&mut self, timestamp_ms: u32, body: &[u8]) {
        let packet = self
            .session
            .publish_audio_data(
                Bytes::copy_from_slice(body),
                RtmpTimestamp::new(timestamp_ms),
                false,
            )
            .unwrap();
        self.send(packet).await;
    }

    async fn send(&mut self, result: ClientSessionResult) {
        if let ClientSessionResult::OutboundResponse(p) = result {
            self.stream.write_all(&p.bytes).await.unwrap();
        }
        // Take what the server sent (acknowledgements), so its queue never fills.
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.stream.try_read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }
}
