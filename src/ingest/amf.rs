//! A bounded structural check of AMF0 (AMF0 File Format Specification §2) run on every
//! command and data message before rml_amf0 parses it.
//!
//! rml_amf0 0.3 recurses once per nesting level with no limit (50,000 nested strict arrays
//! in a 250 KB message overflow the stack and abort the whole process, which no
//! `catch_unwind` can stop), and rml_rtmp indexes into command arguments without checking
//! how many there are. This walk is iterative, follows the same grammar as rml_amf0 (so a
//! message that passes here parses there with at most [`MAX_DEPTH`] levels) and caps the
//! number of values.

/// Deepest nesting of objects and arrays. Real encoders send 2 (onMetaData's object).
pub const MAX_DEPTH: usize = 8;
/// Most values in one message. onMetaData from OBS or ffmpeg has about 20.
pub const MAX_VALUES: usize = 1024;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmfError {
    #[error("AMF0 values nested deeper than {MAX_DEPTH} at byte {offset}")]
    TooDeep { offset: usize },
    #[error("more than {MAX_VALUES} AMF0 values")]
    TooManyValues,
    #[error("AMF0 marker {marker:#04x} at byte {offset} is not supported")]
    UnsupportedMarker { marker: u8, offset: usize },
    #[error("AMF0 data ends inside a value at byte {offset}")]
    Truncated { offset: usize },
    #[error("AMF0 string at byte {offset} is not UTF-8")]
    NotUtf8 { offset: usize },
    #[error("AMF0 object property with an empty name at byte {offset}")]
    EmptyPropertyName { offset: usize },
}

/// What the walk saw at the top level.
#[derive(Debug, Clone, PartialEq)]
pub struct AmfSummary<'a> {
    /// Top-level values.
    pub values: usize,
    /// The first top-level value, when it is a string (a command's or data message's name).
    pub name: Option<&'a str>,
    /// The second top-level value is a number (a command's transaction id).
    pub second_is_number: bool,
}

enum Frame {
    /// Inside an object or ECMA array: properties until the end marker.
    Object,
    /// Inside a strict array: values left.
    Array(u32),
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AmfError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(AmfError::Truncated { offset: self.at })?;
        let bytes = &self.data[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, AmfError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, AmfError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn utf8(&mut self, len: usize) -> Result<&'a str, AmfError> {
        let offset = self.at;
        std::str::from_utf8(self.take(len)?).map_err(|_| AmfError::NotUtf8 { offset })
    }
}

/// Checks `data` (the values of one AMF0 command or data message).
pub fn check(data: &[u8]) -> Result<AmfSummary<'_>, AmfError> {
    let mut cur = Cursor { data, at: 0 };
    let mut stack: Vec<Frame> = Vec::new();
    let mut summary = AmfSummary {
        values: 0,
        name: None,
        second_is_number: false,
    };
    let mut total = 0usize;
    loop {
        // Where the next value comes from: the top level, an object property, or an array.
        match stack.last_mut() {
            None => {
                // Like rml_amf0: the top level ends at the end of the data or an end marker.
                if cur.at == data.len() || data[cur.at] == OBJECT_END {
                    return Ok(summary);
                }
            }
            Some(Frame::Object) => {
                let offset = cur.at;
                let label = cur.u16()? as usize;
                if label == 0 {
                    if cur.take(1)?[0] != OBJECT_END {
                        return Err(AmfError::EmptyPropertyName { offset });
                    }
                    stack.pop();
                    continue;
                }
                cur.utf8(label)?;
            }
            Some(Frame::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Array(left)) => {
                // rml_amf0 ends an array early at an end marker or the end of the data.
                if cur.at == data.len() || data[cur.at] == OBJECT_END {
                    cur.at += usize::from(cur.at < data.len());
                    stack.pop();
                    continue;
                }
                *left -= 1;
            }
        }
        total += 1;
        if total > MAX_VALUES {
            return Err(AmfError::TooManyValues);
        }
        let offset = cur.at;
        let marker = cur.take(1)?[0];
        let top_level = stack.is_empty();
        match marker {
            NUMBER => {
                cur.take(8)?;
            }
            BOOLEAN => {
                cur.take(1)?;
            }
            STRING => {
                let len = cur.u16()? as usize;
                let s = cur.utf8(len)?;
                if top_level && summary.values == 0 {
                    summary.name = Some(s);
                }
            }
            NULL | UNDEFINED => {}
            OBJECT | ECMA_ARRAY | STRICT_ARRAY => {
                if stack.len() >= MAX_DEPTH {
                    return Err(AmfError::TooDeep { offset });
                }
                stack.push(match marker {
                    OBJECT => Frame::Object,
                    ECMA_ARRAY => {
                        // The count is only a hint; the entries end with the end marker.
                        cur.u32()?;
                        Frame::Object
                    }
                    _ => Frame::Array(cur.u32()?),
                });
            }
            _ => return Err(AmfError::UnsupportedMarker { marker, offset }),
        }
        if top_level {
            if summary.values == 1 {
                summary.second_is_number = marker == NUMBER;
            }
            summary.values += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = vec![STRING];
        v.extend((s.len() as u16).to_be_bytes());
        v.extend(s.as_bytes());
        v
    }

    fn number(n: f64) -> Vec<u8> {
        let mut v = vec![NUMBER];
        v.extend(n.to_be_bytes());
        v
    }

    /// ffmpeg's `connect` command, as rml_amf0 writes it.
    fn connect() -> Vec<u8> {
        use rml_rtmp::rml_amf0::{self, Amf0Value};
        let mut props = std::collections::HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        props.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String("rtmp://h/live".into()),
        );
        props.insert("fpad".to_string(), Amf0Value::Boolean(false));
        props.insert("audioCodecs".to_string(), Amf0Value::Number(4071.0));
        rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(props),
            Amf0Value::Null,
        ])
        .unwrap()
    }

    #[test]
    fn a_real_connect_command_passes() {
        let bytes = connect();
        let summary = check(&bytes).unwrap();
        assert_eq!(summary.name, Some("connect"));
        assert!(summary.second_is_number);
        assert_eq!(summary.values, 4);
        // and rml_amf0 agrees
        assert_eq!(
            rml_rtmp::rml_amf0::deserialize(&mut std::io::Cursor::new(&bytes))
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn nesting_is_capped_without_recursion() {
        // 50,000 nested strict arrays: the message that overflowed rml_amf0's stack.
        let mut bytes = Vec::new();
        for _ in 0..50_000 {
            bytes.push(STRICT_ARRAY);
            bytes.extend(1u32.to_be_bytes());
        }
        bytes.push(NULL);
        assert_eq!(check(&bytes), Err(AmfError::TooDeep { offset: 40 }));
        // The deepest allowed still passes.
        let mut ok = Vec::new();
        for _ in 0..MAX_DEPTH {
            ok.push(STRICT_ARRAY);
            ok.extend(1u32.to_be_bytes());
        }
        ok.push(NULL);
        assert_eq!(check(&ok).unwrap().values, 1);
    }

    #[test]
    fn value_count_is_capped() {
        let mut bytes = vec![STRICT_ARRAY];
        bytes.extend(u32::MAX.to_be_bytes());
        bytes.extend(vec![NULL; 100_000]);
        assert_eq!(check(&bytes), Err(AmfError::TooManyValues));
    }

    #[test]
    fn truncated_and_unknown_values() {
        assert_eq!(
            check(&[NUMBER, 1, 2]),
            Err(AmfError::Truncated { offset: 1 })
        );
        assert_eq!(
            check(&[STRING, 0, 10, b'a']),
            Err(AmfError::Truncated { offset: 3 })
        );
        assert_eq!(
            check(&[0x0B, 0, 0]),
            Err(AmfError::UnsupportedMarker {
                marker: 0x0B,
                offset: 0
            })
        );
        assert_eq!(
            check(&[STRING, 0, 2, 0xC3, 0x28]),
            Err(AmfError::NotUtf8 { offset: 3 })
        );
        assert_eq!(
            check(&[OBJECT, 0, 0, 0x05]),
            Err(AmfError::EmptyPropertyName { offset: 1 })
        );
    }

    #[test]
    fn summary_of_a_short_command() {
        let mut bytes = string("publish");
        bytes.extend(number(5.0));
        let summary = check(&bytes).unwrap();
        assert_eq!(
            summary,
            AmfSummary {
                values: 2,
                name: Some("publish"),
                second_is_number: true
            }
        );
    }

    #[test]
    fn arrays_end_early_at_an_end_marker_as_rml_amf0_reads_them() {
        let mut bytes = vec![STRICT_ARRAY];
        bytes.extend(5u32.to_be_bytes());
        bytes.push(NULL);
        bytes.push(OBJECT_END);
        bytes.extend(number(1.0));
        assert_eq!(check(&bytes).unwrap().values, 2);
    }
}
