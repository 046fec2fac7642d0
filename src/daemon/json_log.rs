//! `log_format = "json"`: one JSON object per line on stderr, for log shippers that read a
//! stream rather than the journal.
//!
//! Why our own layer: the object carries the same fields the journal gets from
//! [`tracing_journald`] (`MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER`, `TARGET`, `CODE_FILE`,
//! `CODE_LINE` and each event field, there as `ZKCOORD_<FIELD>`), named in lower case without
//! the prefix, plus a `timestamp` and the `level` word, so a query written for one works on the
//! other.

use serde_json::{Map, Value};
use std::io::Write;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The layer that writes JSON lines to stderr.
pub struct JsonLines {
    /// SYSLOG_IDENTIFIER, as the journal layer sets it.
    identifier: &'static str,
}

impl JsonLines {
    /// A layer writing lines tagged with `identifier` (the program's name).
    pub fn new(identifier: &'static str) -> JsonLines {
        JsonLines { identifier }
    }
}

/// The syslog priority the journal records for a level (tracing-journald's mapping).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 5,
        Level::DEBUG => 6,
        Level::TRACE => 7,
    }
}

/// Collects an event's fields as JSON values under their own names.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_string(), Value::from(format!("{value:?}")));
    }
}

/// One event as the JSON object written for it.
pub fn event_object(event: &Event<'_>, identifier: &str) -> Map<String, Value> {
    let meta = event.metadata();
    let mut obj = Map::new();
    obj.insert("timestamp".into(), Value::from(humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()));
    obj.insert("level".into(), Value::from(meta.level().as_str()));
    obj.insert("priority".into(), Value::from(priority(meta.level())));
    obj.insert("syslog_identifier".into(), Value::from(identifier));
    obj.insert("target".into(), Value::from(meta.target()));
    if let Some(file) = meta.file() {
        obj.insert("code_file".into(), Value::from(file));
    }
    if let Some(line) = meta.line() {
        obj.insert("code_line".into(), Value::from(line));
    }
    let mut fields = Map::new();
    event.record(&mut Fields(&mut fields));
    // Event fields after the fixed ones; a field may not replace them.
    for (k, v) in fields {
        obj.entry(k).or_insert(v);
    }
    obj
}

impl<S: Subscriber> Layer<S> for JsonLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = Value::Object(event_object(event, self.identifier)).to_string();
        line.push('\n');
        // One write per line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::prelude::*;

    /// Captures the objects instead of writing them.
    struct Capture(Arc<Mutex<Vec<Map<String, Value>>>>);
    impl<S: Subscriber> Layer<S> for Capture {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            if let Ok(mut v) = self.0.lock() {
                v.push(event_object(event, "zkcoordd"));
            }
        }
    }

    #[test]
    fn an_event_becomes_one_object_with_the_journal_fields_and_its_own() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(app = "nginxconf", version = "conf-0000000012", attempts = 3u64, "check failed");
        });
        let seen = seen.lock().unwrap();
        let o = &seen[0];
        assert_eq!(o["message"], "check failed");
        assert_eq!(o["level"], "WARN");
        assert_eq!(o["priority"], 4);
        assert_eq!(o["syslog_identifier"], "zkcoordd");
        assert_eq!(o["app"], "nginxconf");
        assert_eq!(o["version"], "conf-0000000012");
        assert_eq!(o["attempts"], 3);
        assert!(o["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(o.contains_key("target") && o.contains_key("code_file") && o.contains_key("code_line"));
    }
}
