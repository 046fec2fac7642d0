//! The legacy trigger listens on a socket: any bytes must give data or a refusal, never a panic,
//! and accepted data is exactly what followed `add|`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = zkcoord::agent::trigger::parse_message(data, None) {
        assert_eq!(&data[4..], body);
        assert!(body.len() <= zkcoord::model::content::MAX_NODE_BYTES);
    }
    if let Ok(body) = zkcoord::agent::trigger::parse_message(data, Some("s3cret")) {
        assert!(data.starts_with(b"add:s3cret|"));
        assert_eq!(&data[11..], body);
    }
});
