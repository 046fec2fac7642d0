//! Publish requests and outcomes come from ZooKeeper nodes anyone with write access could fill:
//! decoding must never panic, and what decodes must round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use zkcoord::model::request;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, body)) = request::decode(data) {
        let again = request::encode(&header, body);
        let (h2, b2) = request::decode(&again).expect("re-encoded request decodes");
        assert_eq!(h2, header);
        assert_eq!(b2, body);
        let _ = zkcoord::model::content::check_size(body.len());
    }
    let _ = serde_json::from_slice::<request::Outcome>(data);
    let _ = serde_json::from_slice::<request::VersionMeta>(data);
    let _ = serde_json::from_slice::<zkcoord::model::status::StatusReport>(data);
});
