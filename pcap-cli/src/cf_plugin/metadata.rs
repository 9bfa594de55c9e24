//! The plugin's metadata, as `cf install-plugin` stores it: the command,
//! its help text, usage and options (shown by `cf help pcap`, and by `cf
//! pcap -h`, which cf rewrites into `cf help pcap`).

use clap::CommandFactory as _;

use super::PluginCli;
use super::gob::{Type, Value};

/// The plugin's name (`cf plugins`, `cf uninstall-plugin pcap`).
pub const PLUGIN_NAME: &str = "pcap";
/// The command, unless `CF_PCAP_COMMAND` names the fallback.
pub const COMMAND: &str = "pcap";
/// The command to install under if cf ever has a core `cf pcap`
/// (RFC0048): cf refuses a plugin whose command clashes with a core one.
pub const FALLBACK_COMMAND: &str = "app-pcap";
/// The environment variable that picks [`FALLBACK_COMMAND`] at install.
pub const COMMAND_ENV: &str = "CF_PCAP_COMMAND";

pub const HELP_TEXT: &str = "Capture the network traffic of an app's instances (pcapng file, stdout, or one line per packet)";

/// `cf help pcap`'s usage line; the command name is substituted.
const USAGE: &str = "cf COMMAND APP_NAME [--instance 0,2] [--process TYPE] [--follow] [-w FILE|-] \
[-C SIZE] [-G SECONDS] [-W COUNT] [-z COMMAND] [-s SNAPLEN] [-c COUNT] [--duration SECS] [--max-bytes N] [--store] \
[-Q in|out|inout] [-e] [--detail] [-x | -xx | -X | -XX | -A | -AA] [-t | -tt | -ttt | -tttt | -ttttt] [-S] [-#] [-l | -U] [-n] \
[--api URL] [--ca FILE] [--insecure] [EXPRESSION]\n\n   \
cf COMMAND myapp -w app.pcapng\n   \
cf COMMAND myapp -w - | wireshark -k -i -\n   \
cf COMMAND myapp --instance 0 -c 100 tcp port 8080\n   \
cf COMMAND myapp --follow -w app.pcapng";

/// The plugin library's `VersionType`.
fn version_type() -> Type {
    Type::Struct(
        "VersionType",
        vec![
            ("Major", Type::Int),
            ("Minor", Type::Int),
            ("Build", Type::Int),
        ],
    )
}

/// The Go types of `code.cloudfoundry.org/cli/plugin`'s `PluginMetadata`.
pub fn metadata_type() -> Type {
    let version = version_type();
    let usage = Type::Struct(
        "Usage",
        vec![("Usage", Type::String), ("Options", Type::string_map())],
    );
    let command = Type::Struct(
        "Command",
        vec![
            ("Name", Type::String),
            ("Alias", Type::String),
            ("HelpText", Type::String),
            ("UsageDetails", usage),
        ],
    );
    Type::Struct(
        "PluginMetadata",
        vec![
            ("Name", Type::String),
            ("Version", version.clone()),
            ("LibraryVersion", version.clone()),
            ("MinCliVersion", version),
            (
                "Commands",
                Type::Slice("[]plugin.Command", Box::new(command)),
            ),
        ],
    )
}

/// Every option of `cf pcap`, from the same clap arguments as `pcap app`:
/// (key, description). The key is the long name (cf shows `--key`), or
/// the short one when there is no long name (cf shows `-k`).
pub fn options() -> Vec<(String, String)> {
    let command = PluginCli::command();
    let mut options = Vec::new();
    for arg in command.get_arguments() {
        if arg.is_positional() || matches!(arg.get_id().as_str(), "help" | "version") {
            continue;
        }
        let help = arg
            .get_help()
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default();
        let (key, help) = match (arg.get_long(), arg.get_short()) {
            (Some(long), Some(short)) => (long.to_owned(), format!("{help} (also -{short})")),
            (Some(long), None) => (long.to_owned(), help),
            (None, Some(short)) => (short.to_string(), help),
            (None, None) => continue,
        };
        options.push((key, help));
    }
    options
}

fn version(text: &str) -> i64 {
    text.parse().unwrap_or(0)
}

/// The metadata for `SetPluginMetadata`, with `command` as the command.
pub fn metadata(command: &str) -> Value {
    let ints =
        |a: i64, b: i64, c: i64| Value::fields(vec![Value::Int(a), Value::Int(b), Value::Int(c)]);
    let options = options()
        .into_iter()
        .map(|(k, v)| (Value::String(k), Value::String(v)))
        .collect();
    Value::fields(vec![
        Value::string(PLUGIN_NAME),
        ints(
            version(env!("CARGO_PKG_VERSION_MAJOR")),
            version(env!("CARGO_PKG_VERSION_MINOR")),
            version(env!("CARGO_PKG_VERSION_PATCH")),
        ),
        // The plugin library's version this plugin speaks: cf accepts 1.
        ints(1, 0, 0),
        // No minimum: cf is then not asked with IsMinCliVersion.
        ints(0, 0, 0),
        Value::Slice(vec![Value::fields(vec![
            Value::string(command),
            Value::string(""),
            Value::string(HELP_TEXT),
            Value::fields(vec![
                Value::String(USAGE.replace("COMMAND", command)),
                Value::Map(options),
            ]),
        ])]),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::gob::{Decoder, Encoder, split_message};
    use super::*;

    #[test]
    fn every_option_is_described_and_in_the_usage() {
        let options = options();
        let keys: Vec<&str> = options.iter().map(|(k, _)| k.as_str()).collect();
        for expected in [
            "instance",
            "process",
            "api",
            "ca",
            "insecure",
            "snaplen",
            "count",
            "duration",
            "max-bytes",
            "w",
            "store",
        ] {
            assert!(keys.contains(&expected), "{expected} missing from {keys:?}");
        }
        // cf removes -v from every plugin command line.
        assert!(!keys.contains(&"v") && !keys.contains(&"verbose"));
        for (key, help) in &options {
            assert!(!help.is_empty(), "{key} has no description");
            let flag = if key.len() == 1 {
                format!("-{key} ")
            } else {
                format!("--{key}")
            };
            let short = help
                .rsplit_once("(also -")
                .map(|(_, s)| format!("-{}", &s[..1]));
            assert!(
                USAGE.contains(&flag) || short.is_some_and(|s| USAGE.contains(&s)),
                "{key} is not in the usage"
            );
        }
    }

    #[test]
    fn round_trips_the_plugin_metadata_shapes() {
        let version = version_type();
        let options = Type::string_map();
        let ty = Type::Struct(
            "Outer",
            vec![
                ("Name", Type::String),
                ("Version", version.clone()),
                ("Empty", version),
                ("List", Type::Slice("[]string", Box::new(Type::String))),
                ("Options", options),
                ("Flag", Type::Bool),
            ],
        );
        let value = Value::fields(vec![
            Value::string("pcap"),
            Value::fields(vec![Value::Int(1), Value::Int(-300), Value::Int(0)]),
            Value::fields(vec![Value::Int(0), Value::Int(0), Value::Int(0)]),
            Value::Slice(vec![Value::string("a"), Value::string("b")]),
            Value::Map(vec![(Value::string("k"), Value::string("v"))]),
            Value::Bool(true),
        ]);
        let mut encoder = Encoder::new();
        let stream = encoder.encode(&ty, &value);
        let mut decoder = Decoder::new();
        let mut rest = stream.as_slice();
        let mut decoded = None;
        while let Some((body, tail)) = split_message(rest).unwrap() {
            if let Some(v) = decoder.message(body).unwrap() {
                decoded = Some(v);
            }
            rest = tail;
        }
        let decoded = decoded.expect("a value");
        assert_eq!(Value::text(decoded.field("Name")), Some("pcap"));
        let version = decoded.field("Version").unwrap();
        assert_eq!(version.field("Major"), Some(&Value::Int(1)));
        assert_eq!(version.field("Minor"), Some(&Value::Int(-300)));
        assert_eq!(version.field("Build"), None, "zero left out");
        assert_eq!(decoded.field("Empty"), Some(&Value::Struct(vec![])));
        assert_eq!(
            decoded.field("List"),
            Some(&Value::Slice(vec![Value::string("a"), Value::string("b")]))
        );
        assert_eq!(Value::boolean(decoded.field("Flag")), Some(true));
    }

    #[test]
    fn the_metadata_encodes() {
        let mut encoder = Encoder::new();
        let bytes = encoder.encode(&metadata_type(), &metadata(COMMAND));
        assert!(bytes.windows(4).any(|w| w == b"pcap"));
    }
}
