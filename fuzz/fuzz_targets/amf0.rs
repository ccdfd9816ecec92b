//! The AMF0 check over any bytes; what it passes, rml_amf0 parses without overflowing
//! the stack.
#![no_main]

use kawa::ingest::amf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if amf::check(data).is_ok() {
        let _ = rml_rtmp::rml_amf0::deserialize(&mut std::io::Cursor::new(data));
    }
});
