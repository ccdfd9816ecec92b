//! Bytes kept as the pieces they were made in. A segment is the parts the live edge
//! already holds: joining them would copy every byte of the stream once more (and
//! hold a second copy of the segment while it is written), so it stays a list and is
//! written out piece by piece.

use std::io::{self, Write};

use bytes::Bytes;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunks {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    pub fn new(pieces: Vec<Bytes>) -> Self {
        let len = pieces.iter().map(Bytes::len).sum();
        Self { pieces, len }
    }

    /// All the bytes' length.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The bytes in one buffer: a copy, for what needs them contiguous (tests, a
    /// request body).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out
    }

    /// The bytes in one `Bytes`: free when there is one piece, else a copy.
    pub fn to_bytes(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            _ => Bytes::from(self.to_vec()),
        }
    }

    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for piece in &self.pieces {
            out.write_all(piece)?;
        }
        Ok(())
    }
}

impl From<Bytes> for Chunks {
    fn from(bytes: Bytes) -> Self {
        Self::new(vec![bytes])
    }
}

impl From<Vec<u8>> for Chunks {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<String> for Chunks {
    fn from(text: String) -> Self {
        text.into_bytes().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_read_and_write_as_one() {
        let chunks = Chunks::new(vec![
            Bytes::from_static(b"moof"),
            Bytes::new(),
            Bytes::from_static(b"mdat"),
        ]);
        assert_eq!(chunks.len(), 8);
        assert_eq!(chunks.to_vec(), b"moofmdat");
        assert_eq!(chunks.to_bytes(), Bytes::from_static(b"moofmdat"));
        let mut written = Vec::new();
        chunks.write_to(&mut written).unwrap();
        assert_eq!(written, b"moofmdat");
        let one = Chunks::from(Bytes::from_static(b"x"));
        assert_eq!(one.to_bytes(), Bytes::from_static(b"x"));
        assert!(Chunks::default().is_empty());
    }
}
