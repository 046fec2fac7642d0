//! The config parser must never panic, whatever the file holds: it answers Ok or an error that
//! names the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = Path::new("/etc/zkcoord.toml");
        match zkcoord::config::Config::from_toml(path, text, |_| None) {
            Ok(c) => {
                let _ = c.layout();
            }
            Err(e) => assert!(e.to_string().contains("/etc/zkcoord.toml")),
        }
    }
});
