//! Configuration: one TOML file (`--config`) under environment variables and flags, for the
//! `webrtcai` server and the `relay` binary alike.
//!
//! Every setting of the server is a flag (`--media-port 40000`), an environment variable
//! (`WEBRTCAI_MEDIA_PORT=40000`) and a key of the file (`media_port = 40000`); the highest of
//! these wins: a flag on the command line, then its environment variable, then the file, then
//! the default. The file is layered in as flags that the command line and the environment did
//! not give, so one parser (clap's) reads all three and a value means the same wherever it
//! comes from. A key that names no setting, or a value its setting refuses, stops the start
//! with the key and the reason: a typo in a config file must not silently leave a default.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::Path;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// It is not TOML.
    #[error("{path}: not TOML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's reason, with the line.
        reason: String,
    },
    /// A key names no setting.
    #[error("{path}: unknown key `{key}`{}", hint.as_ref().map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default())]
    UnknownKey {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// The setting with the nearest name.
        hint: Option<String>,
    },
    /// A value its setting refuses.
    #[error("{path}: `{key}`: {reason}")]
    BadValue {
        /// The file.
        path: String,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Settings that are never printed.
const SECRETS: &[&str] = &["admin_secret", "relay_control_token", "control_token"];

/// Arguments that are not settings.
const NOT_SETTINGS: &[&str] = &["help", "version", "config"];

/// A setting's key in the file: its long flag with underscores (`media_port`).
fn key_of(arg: &Arg) -> Option<String> {
    let long = arg.get_long()?;
    if NOT_SETTINGS.contains(&arg.get_id().as_str()) {
        return None;
    }
    Some(long.replace('-', "_"))
}

/// The settings of `cmd`: its options with a long name, but not help, version or config.
fn settings(cmd: &Command) -> impl Iterator<Item = (&Arg, String)> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional())
        .filter_map(|a| key_of(a).map(|k| (a, k)))
}

/// `cmd` with an environment variable for each setting that has none: `prefix`, `_` and its
/// key in capitals (`WEBRTCAI_MEDIA_PORT`).
pub fn with_env(cmd: Command, prefix: &str) -> Command {
    let prefix = prefix.to_owned();
    cmd.mut_args(move |a| match key_of(&a) {
        Some(key) if a.get_env().is_none() && !a.is_positional() => {
            let name = format!("{prefix}_{}", key.to_uppercase());
            a.env(name)
        }
        _ => a,
    })
}

/// The command line with the file's settings added.
#[derive(Debug)]
pub struct Layered {
    /// The arguments to parse: the program's name, the file's settings as flags, then the
    /// command line as given.
    pub args: Vec<OsString>,
    /// The ids of the settings the file gave (and nothing above it did).
    pub from_file: BTreeSet<String>,
}

/// Layer the TOML `text` of the file at `path` under `argv` (the program's name first), as
/// parsed into `given` by `cmd`: each key becomes the flag it names, unless the command line
/// or the environment already gives that setting.
pub fn layer(
    cmd: &Command,
    given: &ArgMatches,
    argv: &[OsString],
    path: &Path,
    text: &str,
) -> Result<Layered, ConfigError> {
    let file = path.display().to_string();
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: file.clone(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
    let known: Vec<(&Arg, String)> = settings(cmd).collect();
    let mut added = Vec::new();
    let mut from_file = BTreeSet::new();
    for (key, value) in &table {
        let wanted = key.replace('-', "_");
        let Some((arg, _)) = known.iter().find(|(_, k)| *k == wanted) else {
            return Err(ConfigError::UnknownKey {
                path: file,
                key: key.clone(),
                hint: nearest(&wanted, known.iter().map(|(_, k)| k.as_str())),
            });
        };
        let bad = |reason: String| ConfigError::BadValue {
            path: file.clone(),
            key: key.clone(),
            reason,
        };
        let flag = format!("--{}", arg.get_long().unwrap_or_default());
        let mut flags = Vec::new();
        if matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            match value {
                toml::Value::Boolean(true) => flags.push(OsString::from(&flag)),
                toml::Value::Boolean(false) => {}
                other => return Err(bad(format!("expects true or false, not {other}"))),
            }
        } else {
            let values = match value {
                toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                    items.iter().map(scalar).collect::<Result<Vec<_>, _>>()
                }
                toml::Value::Array(_) => Err("expects one value, not a list".to_owned()),
                v => scalar(v).map(|s| vec![s]),
            }
            .map_err(bad)?;
            for v in values {
                check_value(cmd, &flag, &v).map_err(bad)?;
                flags.push(OsString::from(&flag));
                flags.push(OsString::from(v));
            }
        }
        let id = arg.get_id().as_str();
        let above = matches!(
            given.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !above {
            from_file.insert(id.to_owned());
            added.extend(flags);
        }
    }
    let mut args = Vec::with_capacity(argv.len() + added.len());
    args.extend(argv.first().cloned());
    args.extend(added);
    args.extend(argv.iter().skip(1).cloned());
    Ok(Layered { args, from_file })
}

/// Whether `cmd` takes `value` for `flag`: its own parser says, as it would of the flag. Other
/// refusals (a setting that requires another) are left to the whole command line.
fn check_value(cmd: &Command, flag: &str, value: &str) -> Result<(), String> {
    let argv = [cmd.get_name(), flag, value];
    match cmd.clone().try_get_matches_from(argv) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) && matches!(e.get(ContextKind::InvalidArg), Some(ContextValue::String(a)) if a.split(' ').next() == Some(flag)) =>
        {
            Err(clap_reason(&e))
        }
        _ => Ok(()),
    }
}

/// A TOML scalar as a flag's value.
fn scalar(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expects a string or a number, not {}",
            other.type_str()
        )),
    }
}

/// The first line of clap's message, without its `error: ` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.trim_start_matches("error: ").to_owned()
}

/// The known key nearest to `key`, where one is near enough to be a typo of it.
fn nearest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (strsim::levenshtein(key, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k.to_owned())
}

/// The effective configuration of `matches` (parsed by `cmd`) as a TOML file that gives it
/// again, each setting with where its value came from, secrets redacted.
pub fn show(cmd: &Command, matches: &ArgMatches, from_file: &BTreeSet<String>) -> String {
    let mut out = String::from(
        "# The effective configuration: a flag beats its environment variable, which beats the\n\
         # file, which beats the default.\n",
    );
    for (arg, key) in settings(cmd) {
        let id = arg.get_id().as_str();
        let source = if from_file.contains(id) {
            "file".to_owned()
        } else {
            match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => format!(
                    "environment, {}",
                    arg.get_env()
                        .map(|e| e.to_string_lossy())
                        .unwrap_or_default()
                ),
                _ => "default".to_owned(),
            }
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let unset = raw.is_empty() && !flag;
        let source = if unset { "not set".to_owned() } else { source };
        let line = if unset {
            format!("# {key} =")
        } else if SECRETS.contains(&key.as_str()) {
            format!("{key} = \"(redacted)\"")
        } else if flag {
            format!("{key} = {}", matches.get_flag(id))
        } else if matches!(arg.get_action(), ArgAction::Append) {
            let items: Vec<String> = raw.iter().map(|v| toml_value(v)).collect();
            format!("{key} = [{}]", items.join(", "))
        } else {
            format!("{key} = {}", toml_value(&raw.join(" ")))
        };
        out.push_str(&format!("{line:<48} # {source}\n"));
    }
    out
}

/// A value as TOML: a number bare, anything else a quoted string.
fn toml_value(v: &str) -> String {
    if v.parse::<i64>().is_ok() {
        v.to_owned()
    } else {
        toml::Value::String(v.to_owned()).to_string()
    }
}

/// The command line of `cmd` (with environment variables named `prefix_KEY`), with the file
/// its `config` argument names layered under it; returns the command, what was parsed and the
/// settings the file gave. Exits with the reason (and the key) where the file is refused, as
/// clap does for a bad flag.
pub fn parse(cmd: Command, prefix: &str) -> (Command, ArgMatches, BTreeSet<String>) {
    let cmd = with_env(cmd, prefix);
    let argv: Vec<OsString> = std::env::args_os().collect();
    let given = cmd.clone().get_matches_from(&argv);
    let Some(path) = given.get_one::<std::path::PathBuf>("config") else {
        return (cmd, given, BTreeSet::new());
    };
    let layered = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
        .and_then(|text| layer(&cmd, &given, &argv, path, &text));
    match layered {
        Ok(layered) => {
            let matches = cmd.clone().get_matches_from(&layered.args);
            (cmd, matches, layered.from_file)
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A small command shaped like the server's.
    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, global = true)]
        config: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 40000)]
        media_port: u16,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        #[arg(long)]
        no_pin: bool,
        #[arg(long, env = "TEST_ADMIN_SECRET")]
        admin_secret: Option<String>,
        #[arg(long)]
        region: Option<String>,
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("webrtcai")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn parse(args: &[&str], text: &str) -> Result<(Cli, String), ConfigError> {
        use clap::{CommandFactory, FromArgMatches};
        let cmd = with_env(Cli::command(), "TEST");
        let argv = argv(args);
        let given = cmd.clone().try_get_matches_from(&argv).unwrap();
        let layered = layer(&cmd, &given, &argv, Path::new("test.toml"), text)?;
        let matches = cmd.clone().try_get_matches_from(&layered.args).unwrap();
        let shown = show(&cmd, &matches, &layered.from_file);
        Ok((Cli::from_arg_matches(&matches).unwrap(), shown))
    }

    #[test]
    fn a_flag_beats_the_file_which_beats_the_default() {
        let text = "media_port = 41000\nhttp = \"0.0.0.0:80\"\nno-pin = true\nregion = \"eu\"\n";
        let (cli, shown) = parse(&["--http", "127.0.0.1:9000"], text).unwrap();
        assert_eq!(cli.media_port, 41000);
        assert_eq!(cli.http.to_string(), "127.0.0.1:9000");
        assert!(cli.no_pin);
        assert_eq!(cli.region.as_deref(), Some("eu"));
        assert!(shown.contains("media_port = 41000"), "{shown}");
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("http = \"127.0.0.1:9000\"") && l.ends_with("# flag")),
            "{shown}"
        );
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("no_pin = true") && l.ends_with("# file")),
            "{shown}"
        );
        assert!(shown.contains("# admin_secret ="), "{shown}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        assert_eq!(
            parse(&[], "media_prot = 1").unwrap_err(),
            ConfigError::UnknownKey {
                path: "test.toml".into(),
                key: "media_prot".into(),
                hint: Some("media_port".into()),
            }
        );
        let err = parse(&[], "media_port = 70000").unwrap_err().to_string();
        assert!(
            err.starts_with("test.toml: `media_port`: invalid value '70000'"),
            "{err}"
        );
        let err = parse(&[], "no_pin = \"yes\"").unwrap_err().to_string();
        assert_eq!(
            err,
            "test.toml: `no_pin`: expects true or false, not \"yes\""
        );
        let err = parse(&[], "http = [\"a\", \"b\"]").unwrap_err().to_string();
        assert_eq!(err, "test.toml: `http`: expects one value, not a list");
        let err = parse(&[], "http = ").unwrap_err().to_string();
        assert!(err.starts_with("test.toml: not TOML:"), "{err}");
        let err = parse(&[], "config = \"x.toml\"").unwrap_err().to_string();
        assert!(err.starts_with("test.toml: unknown key `config`"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_and_what_is_shown_reads_back_the_same() {
        let (_, shown) = parse(&["--admin-secret", "hunter2"], "region = \"us\"").unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("admin_secret = \"(redacted)\""), "{shown}");
        let (again, shown_again) =
            parse(&[], &shown.replace("admin_secret = \"(redacted)\"", "")).unwrap();
        assert_eq!(again.region.as_deref(), Some("us"));
        assert_eq!(again.media_port, 40000);
        assert!(shown_again.contains("region = \"us\""), "{shown_again}");
    }
}
