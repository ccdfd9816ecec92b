//! The ladder FFmpeg's thumbnails: JPEGs in FFmpeg's multipart JPEG format (`-f mpjpeg`),
//! read from a pipe. Each picture comes with a `Content-length` header, so pictures are
//! cut by length, not by scanning JPEG markers. Hand-written: it is a dozen lines of
//! framing, and no crate reads this muxer's output as a stream of chunks.
//!
//! Pure: bytes in as they arrive, whole JPEGs out.

use bytes::{Buf, Bytes, BytesMut};

/// A picture larger than this is not a thumbnail.
pub const MAX_JPEG_BYTES: usize = 4 * 1024 * 1024;
/// A part's boundary and headers are a few short lines.
const MAX_HEADER_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MpjpegError {
    #[error("a part's headers run past {MAX_HEADER_BYTES} bytes")]
    HeadersTooLong,
    #[error("a part without a Content-length header")]
    NoLength,
    #[error("a picture of {0} bytes (at most {MAX_JPEG_BYTES})")]
    TooLarge(usize),
}

#[derive(Default)]
pub struct MultipartJpegs {
    buf: BytesMut,
    /// The length of the picture whose headers were read.
    body: Option<usize>,
}

impl MultipartJpegs {
    /// The pictures completed by `data`. After an error the reader is done with.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Bytes>, MpjpegError> {
        self.buf.extend_from_slice(data);
        let mut pictures = Vec::new();
        loop {
            match self.body {
                Some(len) if self.buf.len() >= len => {
                    pictures.push(self.buf.split_to(len).freeze());
                    self.body = None;
                }
                Some(_) => return Ok(pictures),
                None => match find(&self.buf, b"\r\n\r\n") {
                    Some(end) => {
                        let len = content_length(&self.buf[..end])?;
                        self.buf.advance(end + 4);
                        self.body = Some(len);
                    }
                    None if self.buf.len() > MAX_HEADER_BYTES => {
                        return Err(MpjpegError::HeadersTooLong);
                    }
                    None => return Ok(pictures),
                },
            }
        }
    }
}

/// The length a part's headers give (the boundary line before them is skipped).
fn content_length(headers: &[u8]) -> Result<usize, MpjpegError> {
    if headers.len() > MAX_HEADER_BYTES {
        return Err(MpjpegError::HeadersTooLong);
    }
    let len = headers
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = std::str::from_utf8(line).ok()?.trim();
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .next()
        .ok_or(MpjpegError::NoLength)?;
    if len > MAX_JPEG_BYTES {
        return Err(MpjpegError::TooLarge(len));
    }
    Ok(len)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Two 64x48 JPEGs from FFmpeg (`tests/fixtures/make.sh`).
    const TWO: &[u8] = include_bytes!("../../tests/fixtures/two_thumbnails.mpjpeg");

    fn all(chunks: impl IntoIterator<Item = Vec<u8>>) -> Result<Vec<Bytes>, MpjpegError> {
        let mut reader = MultipartJpegs::default();
        let mut pictures = Vec::new();
        for chunk in chunks {
            pictures.extend(reader.push(&chunk)?);
        }
        Ok(pictures)
    }

    #[test]
    fn ffmpeg_output_gives_its_two_jpegs() {
        let pictures = all([TWO.to_vec()]).unwrap();
        assert_eq!(pictures.len(), 2);
        for jpeg in &pictures {
            assert!(jpeg.starts_with(&[0xFF, 0xD8]), "SOI");
            assert!(jpeg.ends_with(&[0xFF, 0xD9]), "EOI");
        }
    }

    #[test]
    fn missing_or_huge_lengths_are_refused() {
        assert_eq!(
            all([b"--ffmpeg\r\nContent-type: image/jpeg\r\n\r\n".to_vec()]),
            Err(MpjpegError::NoLength)
        );
        assert_eq!(
            all([b"--x\r\nContent-length: 99999999999\r\n\r\n".to_vec()]),
            Err(MpjpegError::TooLarge(99_999_999_999))
        );
        assert_eq!(
            all([vec![b'a'; MAX_HEADER_BYTES + 1]]),
            Err(MpjpegError::HeadersTooLong)
        );
    }

    proptest! {
        /// However the pipe splits the bytes, the same pictures come out.
        #[test]
        fn any_split_gives_the_same_pictures(cuts in proptest::collection::vec(0..TWO.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([TWO.len()]) {
                chunks.push(TWO[at..cut].to_vec());
                at = cut;
            }
            prop_assert_eq!(all(chunks).unwrap(), all([TWO.to_vec()]).unwrap());
        }

        /// Arbitrary bytes give pictures or an error, never a panic, and nothing larger
        /// than the cap is held.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut reader = MultipartJpegs::default();
            if reader.push(&data).is_ok() {
                prop_assert!(reader.buf.len() <= MAX_JPEG_BYTES + MAX_HEADER_BYTES + 4096);
            }
        }
    }
}
