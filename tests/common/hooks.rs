//! A webhook receiver on loopback: a minimal HTTP server that records every call and
//! answers as a test says, and the check of Kawa's signature.

use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const SECRET: &str = "hook-secret-0123456789";

#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub signature: String,
    pub body: Vec<u8>,
}

/// A minimal HTTP/1.1 server: one request per connection, answered by `status`.
pub async fn receiver(port: u16, calls: Arc<Mutex<Vec<Call>>>, status: fn(&Call, usize) -> u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let calls = Arc::clone(&calls);
        tokio::spawn(async move {
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                data.extend_from_slice(&buf[..n]);
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
            };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let length: usize = header("content-length").parse().unwrap_or(0);
            while data.len() < head_end + length {
                let n = socket.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                data.extend_from_slice(&buf[..n]);
            }
            let call = Call {
                path: head.split_whitespace().nth(1).unwrap_or("").to_owned(),
                signature: header("kawa-signature"),
                body: data[head_end..head_end + length].to_vec(),
            };
            let seen = {
                let mut calls = calls.lock().unwrap();
                calls.push(call.clone());
                calls.iter().filter(|c| c.path == call.path).count()
            };
            let code = status(&call, seen);
            let answer =
                format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
        });
    }
}

pub fn verify(call: &Call) {
    let (t, v1) = call
        .signature
        .strip_prefix("t=")
        .and_then(|s| s.split_once(",v1="))
        .unwrap_or_else(|| panic!("no signature: {call:?}"));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&call.body);
    assert_eq!(hex::encode(mac.finalize().into_bytes()), v1, "{call:?}");
}

pub fn json(call: &Call) -> Value {
    serde_json::from_slice(&call.body).unwrap()
}
