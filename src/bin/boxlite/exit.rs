//! Exit codes, one per class of failure, and errors printed as one line. `run` and `exec`
//! otherwise exit with their command's own code (128 + N for a command killed by signal N),
//! so boxlite's own codes sit where commands rarely go: sysexits(3)'s range and docker's
//! 125-127.

use boxlite::{Error, ExecErrorKind, PullErrorKind};

/// What `boxlite --help` says about exit codes (keep in step with `ExitClass` and docs/cli.md).
pub const EXIT_CODES_HELP: &str = "\
Exit codes: run and exec exit with their command's code (128+N when killed by signal N).
Otherwise: 0 ok; 64 bad flag or value; 65 invalid image; 66 no such box or image;
67 the box's state forbids it (running, stopped, name taken); 69 this host cannot run a VM
(engine or helper missing); 70 the box failed (boot, VM died, agent); 74 I/O or copy error;
75 the home is in use by another boxlite; 76 registry error; 125 other boxlite error;
126 the command cannot be run (not executable, no such user or directory); 127 no such command;
130 interrupted (SIGINT or SIGTERM) while boxlite itself was at work, e.g. starting a box.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    Usage = 64,
    Image = 65,
    NotFound = 66,
    State = 67,
    Host = 69,
    BoxFailed = 70,
    Io = 74,
    Busy = 75,
    Registry = 76,
    Other = 125,
    CannotInvoke = 126,
    CommandNotFound = 127,
    /// SIGINT or SIGTERM stopped boxlite's own work (as a shell reports 128 + SIGINT).
    Interrupted = 130,
}

impl ExitClass {
    pub fn of(error: &Error) -> ExitClass {
        match error {
            Error::InvalidOption { .. } => ExitClass::Usage,
            Error::InvalidImage { .. } | Error::UnsafeLayer { .. } => ExitClass::Image,
            Error::NotFound { .. } => ExitClass::NotFound,
            Error::Pull { kind: PullErrorKind::NotFound, .. } => ExitClass::NotFound,
            Error::Pull { .. } => ExitClass::Registry,
            Error::InvalidState { .. } => ExitClass::State,
            Error::EngineUnavailable { .. } | Error::HelperNotFound { .. } => ExitClass::Host,
            Error::ShimExited { .. } | Error::ShimFailed { .. } | Error::AgentTimeout { .. } | Error::GuestProtocol { .. } => {
                ExitClass::BoxFailed
            }
            Error::Agent { .. } => ExitClass::BoxFailed,
            Error::Io { .. } | Error::Copy { .. } => ExitClass::Io,
            Error::HomeLocked { .. } => ExitClass::Busy,
            Error::ExecRefused { kind: ExecErrorKind::ProgramNotFound, .. } => ExitClass::CommandNotFound,
            Error::ExecRefused { .. } => ExitClass::CannotInvoke,
            _ => ExitClass::Other,
        }
    }
}

/// A failed command: the library's error (or one of the CLI's own, in the library's
/// variants) and, where the message alone does not say what to do, a hint.
#[derive(Debug)]
pub struct Failure {
    /// Boxed: the library's error is large, and failures travel up every call.
    pub error: Box<Error>,
    pub hint: Option<String>,
    /// Set where the error's own class is not the story (an interrupted start).
    pub class: Option<ExitClass>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure { error: Box::new(error), hint: None, class: None }
    }
}

pub type CliResult<T> = Result<T, Failure>;

/// Adds a hint to a failure.
pub trait Hint<T> {
    fn hint(self, hint: impl FnOnce(&Error) -> Option<String>) -> CliResult<T>;
}

impl<T, E: Into<Failure>> Hint<T> for Result<T, E> {
    fn hint(self, hint: impl FnOnce(&Error) -> Option<String>) -> CliResult<T> {
        self.map_err(|e| {
            let mut failure: Failure = e.into();
            if failure.hint.is_none() {
                failure.hint = hint(&failure.error);
            }
            failure
        })
    }
}

impl Failure {
    pub fn with_hint(error: Error, hint: String) -> Failure {
        Failure { error: Box::new(error), hint: Some(hint), class: None }
    }

    pub fn code(&self) -> i32 {
        self.class.unwrap_or_else(|| ExitClass::of(&self.error)) as i32
    }

    /// The failure as one line. Boot failures quote the console and shim logs on further
    /// lines: those stay in the home's log (logs/boxlite.log) and in `boxlite logs BOX`.
    pub fn line(&self) -> String {
        let text = self.error.to_string();
        let mut line = match text.split_once('\n') {
            Some((first, _)) => {
                format!("{} (the box's logs: boxlite logs BOX)", first.trim_end_matches(':').trim_end_matches("; last lines of"))
            }
            None => text,
        };
        if let Some(hint) = &self.hint {
            line.push_str("; ");
            line.push_str(hint);
        }
        line.replace(['\n', '\r'], " ")
    }
}

/// A clap error (bad flag, missing argument) as one line, and its exit code; help and
/// version requests print as clap prints them and exit 0.
pub fn clap_failure(error: clap::Error) -> (Option<String>, i32) {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            (None, 0)
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            (None, ExitClass::Usage as i32)
        }
        _ => {
            let rendered = error.render().to_string();
            let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
            let first = first.trim().trim_start_matches("error: ");
            let usage = rendered.lines().find_map(|l| l.strip_prefix("Usage: ")).map(|u| u.trim().to_string());
            let hint = match usage {
                Some(usage) => format!("usage: {usage} (see --help)"),
                None => "see boxlite --help".into(),
            };
            (Some(format!("{first}; {hint}")), ExitClass::Usage as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn each_error_class_has_its_own_code() {
        let cases = [
            (Error::InvalidOption { field: "x", reason: "y".into() }, 64),
            (Error::InvalidImage { what: "x".into() }, 65),
            (Error::NotFound { what: "box \"x\"".into() }, 66),
            (Error::Pull { reference: "r".into(), kind: PullErrorKind::NotFound, reason: "no".into() }, 66),
            (Error::InvalidState { what: "x".into(), reason: "y".into() }, 67),
            (Error::ShimFailed { message: "x".into() }, 70),
            (Error::Io { op: "x".into(), source: std::io::Error::other("y") }, 74),
            (Error::HomeLocked { home: "/h".into(), holder_pid: Some(1) }, 75),
            (Error::Pull { reference: "r".into(), kind: PullErrorKind::Other, reason: "refused".into() }, 76),
            (Error::StillRunning { what: "x".into() }, 125),
            (Error::ExecRefused { program: "x".into(), kind: ExecErrorKind::NotExecutable, message: "m".into() }, 126),
            (Error::ExecRefused { program: "x".into(), kind: ExecErrorKind::ProgramNotFound, message: "m".into() }, 127),
        ];
        for (error, code) in cases {
            assert_eq!(Failure::from(error).code(), code);
        }
        for code in [64, 65, 66, 67, 69, 70, 74, 75, 76, 125, 126, 127, 130] {
            assert!(EXIT_CODES_HELP.contains(&format!("{code} ")), "--help does not document {code}");
        }
    }

    #[test]
    fn a_failure_is_one_line_with_its_hint() {
        let failure: CliResult<()> =
            Err(Error::NotFound { what: "box \"x\"".into() }).hint(|_| Some("list boxes with boxlite ps -a".into()));
        assert_eq!(failure.unwrap_err().line(), "box \"x\" does not exist; list boxes with boxlite ps -a");
        let boot = Failure::from(Error::AgentTimeout {
            timeout: std::time::Duration::from_secs(20),
            last_error: "refused".into(),
            console: "/c".into(),
            console_tail: "line 1\nline 2".into(),
        });
        let line = boot.line();
        assert!(!line.contains('\n') && line.contains("boxlite logs"), "{line}");
    }

    #[test]
    fn a_bad_flag_is_one_line_with_the_usage() {
        let error = crate::args::Cli::try_parse_from(["boxlite", "run", "--bogus", "busybox"]).err().unwrap();
        let (line, code) = clap_failure(error);
        let line = line.unwrap();
        assert_eq!(code, 64);
        assert!(!line.contains('\n') && line.contains("--bogus") && line.contains("usage: boxlite run"), "{line}");
    }
}
