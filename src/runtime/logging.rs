//! Where the library's logs go. boxlite emits `tracing` events and installs no process-wide
//! subscriber unless the application asks for one: a Rust application keeps its own; a C
//! application (or a binding) routes them with a handler (sqlite's `SQLITE_CONFIG_LOG` is
//! the model) and/or asks for `<home>/logs/boxlite.log` (`RuntimeOptions::log_to_home`).
//! Both go through one forwarding subscriber, installed the first time either is asked for.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::runtime::error::{Error, Result};

/// Severity of a log record, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl LogLevel {
    fn of(level: &tracing::Level) -> LogLevel {
        match *level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        }
    }
}

/// Receives one record: its level, its source (a module path) and its text. Called on
/// whichever thread logged, possibly several at once.
pub type LogHandler = Arc<dyn Fn(LogLevel, &str, &str) + Send + Sync>;

/// The level of the files under homes' logs/ directories.
const FILE_LEVEL: LogLevel = LogLevel::Info;

#[derive(Default)]
struct Sinks {
    handler: Option<(LogHandler, LogLevel)>,
    files: Vec<(PathBuf, Mutex<tracing_appender::rolling::RollingFileAppender>)>,
}

fn sinks() -> &'static RwLock<Sinks> {
    static SINKS: OnceLock<RwLock<Sinks>> = OnceLock::new();
    SINKS.get_or_init(RwLock::default)
}

/// The most verbose level any sink wants (0: none), checked before a record is formatted.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);

fn update_max_level(sinks: &Sinks) {
    let handler = sinks.handler.as_ref().map_or(0, |(_, level)| *level as u8);
    let files = if sinks.files.is_empty() { 0 } else { FILE_LEVEL as u8 };
    MAX_LEVEL.store(handler.max(files), Ordering::Relaxed);
}

/// Installs the forwarding subscriber once per process. Fails, saying why, if the
/// application installed a global subscriber of its own first.
fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::registry().with(Forward);
        tracing::subscriber::set_global_default(subscriber)
            .map_err(|_| "the application installed a global tracing subscriber of its own; boxlite's logs already go there".to_string())
    });
    installed.clone().map_err(|reason| Error::InvalidState { what: "routing boxlite's logs".into(), reason })
}

/// Sends every record at `max_level` or more severe to `handler` (replacing the previous
/// one); `None` stops it.
pub fn set_handler(handler: Option<LogHandler>, max_level: LogLevel) -> Result<()> {
    if handler.is_some() {
        install()?;
    }
    let mut sinks = sinks().write().unwrap_or_else(|e| e.into_inner());
    sinks.handler = handler.map(|h| (h, max_level));
    update_max_level(&sinks);
    Ok(())
}

/// Also writes records (info and more severe) to `dir/boxlite.log`, rotated daily. Every
/// such file gets the records of the whole process.
pub fn log_to_dir(dir: &Path) -> Result<()> {
    install()?;
    let mut sinks = sinks().write().unwrap_or_else(|e| e.into_inner());
    if !sinks.files.iter().any(|(d, _)| d == dir) {
        let appender = tracing_appender::rolling::daily(dir, "boxlite.log");
        sinks.files.push((dir.to_path_buf(), Mutex::new(appender)));
        update_max_level(&sinks);
    }
    Ok(())
}

/// The forwarding layer.
struct Forward;

impl<S: Subscriber> Layer<S> for Forward {
    // Levels change at run time: decide per event, never cache "never" for a call site.
    fn register_callsite(&self, _metadata: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        LogLevel::of(metadata.level()) as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = LogLevel::of(event.metadata().level());
        let mut text = Text::default();
        event.record(&mut text);
        let target = event.metadata().target();
        let sinks = sinks().read().unwrap_or_else(|e| e.into_inner());
        if let Some((handler, max)) = &sinks.handler {
            if level <= *max {
                handler(level, target, &text.0);
            }
        }
        if level <= FILE_LEVEL && !sinks.files.is_empty() {
            let line = format!("{} {:>5} {target}: {}\n", utc_now(), event.metadata().level(), text.0);
            for (_, file) in &sinks.files {
                let _ = file.lock().unwrap_or_else(|e| e.into_inner()).write_all(line.as_bytes());
            }
        }
    }
}

/// A record's message followed by its other fields as ` name=value`.
#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

/// The time now as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn utc_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (days, secs) = (now.as_secs() / 86_400, now.as_secs() % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", secs / 3600, secs / 60 % 60, secs % 60, now.subsec_millis())
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_789), (2026, 12, 2));
    }

    #[test]
    fn a_handler_gets_records_up_to_its_level_and_none_after_it_is_removed() {
        let seen: Arc<Mutex<Vec<(LogLevel, String)>>> = Arc::default();
        let sink = seen.clone();
        let handler: LogHandler = Arc::new(move |level, _target, text| sink.lock().unwrap().push((level, text.to_string())));
        set_handler(Some(handler), LogLevel::Info).unwrap();
        tracing::info!(box_id = "abc", "started");
        tracing::debug!("too verbose");
        tracing::warn!("careful");
        set_handler(None, LogLevel::Info).unwrap();
        tracing::error!("after removal");
        let seen = seen.lock().unwrap();
        assert_eq!(*seen, vec![(LogLevel::Info, "started box_id=abc".to_string()), (LogLevel::Warn, "careful".to_string())]);
    }
}
