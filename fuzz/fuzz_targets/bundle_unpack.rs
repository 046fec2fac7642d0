//! Bundle archives come from ZooKeeper (whoever can write a version chooses the bytes) and are
//! unpacked as root: unpacking must never panic, never write outside the target directory, and
//! never create anything but regular files and directories.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use zkcoord::host::bundle;
use zkcoord::host::install::Ownership;

/// Everything under `dir`, as (path, is_dir); panics on a symlink or special file.
fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = std::fs::symlink_metadata(e.path()).unwrap().file_type();
        assert!(t.is_file() || t.is_dir(), "unpack created {:?} ({t:?})", e.path());
        out.push(e.path());
        if t.is_dir() {
            walk(&e.path(), out);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().unwrap();
    let into = scratch.path().join("into");
    std::fs::create_dir(&into).unwrap();
    let _ = bundle::unpack(data, &into, 1 << 20, Ownership { uid: None, gid: None });
    // Nothing beside the target directory, whatever the archive said.
    let top: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(top, vec![std::ffi::OsString::from("into")], "unpack wrote outside its directory");
    let mut all = Vec::new();
    walk(&into, &mut all);
});
