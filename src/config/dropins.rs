//! Drop-in files: `/etc/zkcoord.d/*.toml` (the `zkcoord.d` directory beside the main file, or
//! the main file's `dropin_dir`), merged after the main file in name order.
//!
//! Why: configuration management tools and packages own one file each (one file per app, as
//! confd keeps one per resource), and none of them should have to edit a shared
//! `/etc/zkcoord.toml`. Each drop-in may add `[[app]]` and `[[service]]` entries and set keys
//! the main file leaves out; a key set in two files is an error naming both, so the outcome
//! never depends on which file happens to sort last.

use super::ConfigError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The arrays of tables that drop-ins append to instead of conflicting over.
const APPENDABLE: &[&str] = &["app", "service"];

/// The key in the main file that moves the drop-in directory.
pub const DROPIN_DIR_KEY: &str = "dropin_dir";

/// The files of one configuration, merged into one TOML table.
#[derive(Debug)]
pub struct Merged {
    /// The merged table, before environment overrides and typed parsing.
    pub table: toml::Table,
    /// Every file read, the main file first, then the drop-ins in the order merged.
    pub files: Vec<PathBuf>,
    /// For each `[[app]]` entry of the merged table (by index), the file it came from.
    pub app_sources: Vec<PathBuf>,
    /// For each `[[service]]` entry of the merged table (by index), the file it came from.
    pub service_sources: Vec<PathBuf>,
}

/// The directory whose `*.toml` files are merged after `main`: `dropin_dir` from the main
/// file when set (relative paths are taken from the main file's directory), else `zkcoord.d`
/// beside the main file (`/etc/zkcoord.toml` -> `/etc/zkcoord.d`).
pub fn dropin_dir(main: &Path, table: &toml::Table) -> Result<PathBuf, ConfigError> {
    let base = main.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    match table.get(DROPIN_DIR_KEY) {
        None => Ok(base.join("zkcoord.d")),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(base.join(s)),
        Some(other) => Err(ConfigError::invalid(
            main,
            DROPIN_DIR_KEY,
            &format!("expected a directory path like \"/etc/zkcoord.d\", got {other}"),
        )),
    }
}

/// The drop-in files in `dir`, in name order: regular `*.toml` files, hidden files (editor and
/// package-manager leftovers such as `.x.toml.swp`, `.dpkg-new`) skipped. A missing directory
/// holds none.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { path: dir.to_path_buf(), source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".toml") || !path.is_file() {
            continue;
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

/// Parses one file's TOML, with the toml crate's line and column in the error.
pub fn parse(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str::<toml::Table>(text)
        .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string().trim_end().to_string() })
}

/// Merges `dropins` (path and parsed table, in order) after the main file's table.
pub fn merge(main: &Path, table: toml::Table, dropins: Vec<(PathBuf, toml::Table)>) -> Result<Merged, ConfigError> {
    let count = |t: &toml::Table, k: &str| t.get(k).and_then(toml::Value::as_array).map_or(0, Vec::len);
    let mut merged = Merged {
        app_sources: vec![main.to_path_buf(); count(&table, "app")],
        service_sources: vec![main.to_path_buf(); count(&table, "service")],
        files: vec![main.to_path_buf()],
        table,
    };
    // Which file set each leaf key, by dotted name, to name both files on a conflict.
    let mut owners = BTreeMap::new();
    record_owners(&merged.table, "", main, &mut owners);
    for (path, dropin) in dropins {
        if dropin.contains_key(DROPIN_DIR_KEY) {
            return Err(ConfigError::invalid(&path, DROPIN_DIR_KEY, "is read from the main file only"));
        }
        merged.app_sources.extend(std::iter::repeat_n(path.clone(), count(&dropin, "app")));
        merged.service_sources.extend(std::iter::repeat_n(path.clone(), count(&dropin, "service")));
        merge_table(&mut merged.table, dropin, "", &path, &mut owners)?;
        merged.files.push(path);
    }
    Ok(merged)
}

fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn record_owners(table: &toml::Table, prefix: &str, file: &Path, owners: &mut BTreeMap<String, PathBuf>) {
    for (k, v) in table {
        let key = dotted(prefix, k);
        match v {
            toml::Value::Table(t) => record_owners(t, &key, file, owners),
            _ if prefix.is_empty() && APPENDABLE.contains(&k.as_str()) => {}
            _ => {
                owners.insert(key, file.to_path_buf());
            }
        }
    }
}

fn merge_table(
    into: &mut toml::Table,
    from: toml::Table,
    prefix: &str,
    file: &Path,
    owners: &mut BTreeMap<String, PathBuf>,
) -> Result<(), ConfigError> {
    for (k, v) in from {
        let key = dotted(prefix, &k);
        let appendable = prefix.is_empty() && APPENDABLE.contains(&k.as_str());
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Array(existing)), toml::Value::Array(more)) if appendable => existing.extend(more),
            (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => merge_table(existing, more, &key, file, owners)?,
            (Some(_), _) => {
                let first = owners.get(&key).map_or_else(|| "an earlier file".to_string(), |p| p.display().to_string());
                return Err(ConfigError::invalid(
                    file,
                    &key,
                    &format!("already set in {first}; set each key in one file only (drop-ins may add [[app]] and [[service]] entries)"),
                ));
            }
            (None, v) => {
                if let toml::Value::Table(t) = &v {
                    record_owners(t, &key, file, owners);
                } else if !appendable {
                    owners.insert(key, file.to_path_buf());
                }
                into.insert(k, v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        parse(Path::new("t.toml"), text).unwrap()
    }

    fn merged(main: &str, dropins: &[(&str, &str)]) -> Result<Merged, ConfigError> {
        let d = dropins.iter().map(|(p, t)| (PathBuf::from(p), table(t))).collect();
        merge(Path::new("/etc/zkcoord.toml"), table(main), d)
    }

    #[test]
    fn dropins_append_apps_and_services_after_the_main_files_in_order() {
        let m = merged(
            "role = \"app\"\n[[app]]\nname = \"a\"\n",
            &[
                ("/etc/zkcoord.d/10-b.toml", "[[app]]\nname = \"b\"\n[[service]]\nname = \"s\"\n"),
                ("/etc/zkcoord.d/20-c.toml", "[[app]]\nname = \"c\"\n"),
            ],
        )
        .unwrap();
        let names: Vec<_> = m.table["app"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m.app_sources, [PathBuf::from("/etc/zkcoord.toml"), "/etc/zkcoord.d/10-b.toml".into(), "/etc/zkcoord.d/20-c.toml".into()]);
        assert_eq!(m.service_sources, [PathBuf::from("/etc/zkcoord.d/10-b.toml")]);
        assert_eq!(m.files.len(), 3);
    }

    #[test]
    fn a_dropin_may_fill_in_keys_and_sections_the_main_file_leaves_out() {
        let m = merged("role = \"app\"\n[zookeeper]\nhosts = \"zk:2181\"\n", &[("/d/a.toml", "[zookeeper]\nsession_timeout = \"4s\"\n[http]\nlisten = \"127.0.0.1:1\"\n")]).unwrap();
        assert_eq!(m.table["zookeeper"]["hosts"].as_str(), Some("zk:2181"));
        assert_eq!(m.table["zookeeper"]["session_timeout"].as_str(), Some("4s"));
        assert_eq!(m.table["http"]["listen"].as_str(), Some("127.0.0.1:1"));
    }

    #[test]
    fn a_key_set_twice_is_an_error_that_names_both_files_and_the_key() {
        let e = merged("[zookeeper]\nhosts = \"a:1\"\n", &[("/etc/zkcoord.d/x.toml", "[zookeeper]\nhosts = \"b:2\"\n")]).unwrap_err().to_string();
        assert!(e.contains("/etc/zkcoord.d/x.toml") && e.contains("/etc/zkcoord.toml") && e.contains("zookeeper.hosts"), "{e}");
        // Between two drop-ins, too.
        let e = merged("role = \"app\"\n", &[("/d/1.toml", "log_level = \"debug\"\n"), ("/d/2.toml", "log_level = \"info\"\n")]).unwrap_err().to_string();
        assert!(e.contains("/d/1.toml") && e.contains("/d/2.toml") && e.contains("log_level"), "{e}");
    }

    #[test]
    fn only_the_main_file_moves_the_dropin_directory() {
        assert_eq!(dropin_dir(Path::new("/etc/zkcoord.toml"), &table("")).unwrap(), PathBuf::from("/etc/zkcoord.d"));
        assert_eq!(dropin_dir(Path::new("/etc/zkcoord.toml"), &table("dropin_dir = \"/srv/z.d\"")).unwrap(), PathBuf::from("/srv/z.d"));
        assert_eq!(dropin_dir(Path::new("/etc/x/z.toml"), &table("dropin_dir = \"more\"")).unwrap(), PathBuf::from("/etc/x/more"));
        assert!(dropin_dir(Path::new("/etc/zkcoord.toml"), &table("dropin_dir = 3")).is_err());
        let e = merged("role = \"app\"\n", &[("/d/1.toml", "dropin_dir = \"/x\"\n")]).unwrap_err().to_string();
        assert!(e.contains("/d/1.toml") && e.contains("main file only"), "{e}");
    }

    #[test]
    fn only_visible_toml_files_are_listed_in_name_order_and_a_missing_directory_has_none() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["20-b.toml", "10-a.toml", ".10-a.toml.swp", "README", "30-c.toml.dpkg-old", ".hidden.toml"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("40-dir.toml")).unwrap();
        let names: Vec<_> = list(dir.path()).unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["10-a.toml", "20-b.toml"]);
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
    }

    #[test]
    fn config_load_merges_the_directory_beside_the_main_file_and_lists_what_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("zkcoord.toml");
        std::fs::write(&main, "role = \"app\"\nnode_id = \"h\"\n[zookeeper]\nhosts = \"127.0.0.1:2181\"\n[[app]]\nname = \"a\"\ndest = \"/tmp/a.conf\"\n").unwrap();
        let config = crate::config::Config::load(&main).unwrap();
        assert_eq!(config.files, [main.clone()]);
        let d = dir.path().join("zkcoord.d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("50-b.toml"), "[[app]]\nname = \"b\"\ndest = \"/tmp/b.conf\"\n").unwrap();
        std::fs::write(d.join("60-s.toml"), "[[service]]\nname = \"web\"\nport = 80\n").unwrap();
        let config = crate::config::Config::load(&main).unwrap();
        assert_eq!(config.apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(config.services.len(), 1);
        assert_eq!(config.files, [main.clone(), d.join("50-b.toml"), d.join("60-s.toml")]);
        // A bad entry is blamed on the drop-in it came from.
        std::fs::write(d.join("70-bad.toml"), "[[app]]\nname = \"c\"\ndest = \"relative\"\n").unwrap();
        let e = crate::config::Config::load(&main).unwrap_err().to_string();
        assert!(e.contains("70-bad.toml") && e.contains("app[2].dest"), "{e}");
        std::fs::write(d.join("70-bad.toml"), "[[app]]\nname = \"c\"\ndest = \"/tmp/c\"\nmode = \"rw\"\n").unwrap();
        let e = crate::config::Config::load(&main).unwrap_err().to_string();
        assert!(e.contains("70-bad.toml") && e.contains("mode"), "{e}");
        std::fs::write(d.join("70-bad.toml"), "[[app]\n").unwrap();
        let e = crate::config::Config::load(&main).unwrap_err().to_string();
        assert!(e.contains("70-bad.toml") && e.contains("line 1"), "{e}");
    }
}
