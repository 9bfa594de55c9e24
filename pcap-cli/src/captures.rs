//! `pcap captures list|download`: the captures `pcap capture --store` left
//! in the API's object store. Listing asks the API; a download asks the API
//! for a short-lived presigned URL and fetches the object from the store
//! itself, with progress on stderr.

use std::fs::{self, File};
use std::io::{self, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use pcap_proto::v1::api_client::ApiClient;
use pcap_proto::v1::{GetDownloadUrlRequest, ListCapturesRequest, StoredCapture};
use tonic::transport::Uri;

use crate::connect;
use crate::status::code_name;

#[derive(Debug, Subcommand)]
pub enum CapturesCommand {
    /// List your stored captures (an admin's: everyone's), newest first.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Download a stored capture through a short-lived presigned URL.
    Download {
        #[command(flatten)]
        connection: Connection,
        /// The capture's id, as `pcap captures list` shows it.
        #[arg(value_name = "ID")]
        id: String,
        /// Where to write it (`-` for stdout); default `ID.pcapng`.
        #[arg(short = 'w', value_name = "FILE|-")]
        write: Option<PathBuf>,
    },
}

/// How to reach the API: `pcap capture`'s and `pcap captures`' flags, and
/// what `pcap bosh` and `pcap app` fill in from their logins.
#[derive(Debug, Args)]
pub struct Connection {
    /// The pcap-api to ask, e.g. https://pcap-api.example.com:8443.
    #[arg(long, value_name = "URL")]
    pub api: Uri,

    /// Verify the API's certificate against this CA (PEM) instead of the
    /// system's roots (a download from the store trusts both).
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub ca: Option<PathBuf>,

    /// Do not verify certificates, and allow http:// URLs. For development
    /// only: anyone in between can read the token.
    #[arg(long)]
    pub insecure: bool,

    /// The bearer token that identifies you to the API.
    #[arg(long, env = "PCAP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl Connection {
    /// Checks what clap cannot; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match (self.api.scheme_str(), self.api.host()) {
            (Some("https"), Some(_)) => {}
            (Some("http"), Some(_)) if self.insecure => {}
            (Some("http"), Some(_)) => {
                return Err(format!(
                    "--api {}: plain http:// would send the token unencrypted; \
                     use an https:// URL, or --insecure for development",
                    self.api
                ));
            }
            _ => {
                return Err(format!(
                    "--api {}: expected a URL like https://pcap-api.example.com:8443",
                    self.api
                ));
            }
        }
        if let Some(token) = &self.token
            && (token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(
                "the token (--token or PCAP_TOKEN) must be printable ASCII without spaces"
                    .to_owned(),
            );
        }
        Ok(())
    }

    fn request<T>(&self, message: T) -> anyhow::Result<tonic::Request<T>> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .context("the token cannot be sent in a header")?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    async fn client(&self) -> anyhow::Result<ApiClient<tonic::transport::Channel>> {
        let channel = connect::connect(&self.api, self.ca.as_deref(), self.insecure)
            .await
            .with_context(|| format!("cannot reach the API at {}", self.api))?;
        Ok(ApiClient::new(channel))
    }
}

impl CapturesCommand {
    pub fn connection(&self) -> &Connection {
        match self {
            Self::List { connection } | Self::Download { connection, .. } => connection,
        }
    }

    /// Runs the command; errors end it with status 1.
    pub async fn run(&self) -> anyhow::Result<()> {
        match self {
            Self::List { connection } => list(connection).await,
            Self::Download {
                connection,
                id,
                write,
            } => download(connection, id, write.as_deref()).await,
        }
    }
}

/// A refusal from the API, in words.
fn refused(status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the API refused: {}: {}",
        code_name(status.code()),
        status.message()
    )
}

async fn list(connection: &Connection) -> anyhow::Result<()> {
    let mut client = connection.client().await?;
    let response = client
        .list_captures(connection.request(ListCapturesRequest {})?)
        .await
        .map_err(|s| refused(&s))?
        .into_inner();
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<26} {:<12} {:>12}  {:<20} {:<20}",
        "ID", "OWNER", "SIZE", "CREATED (UTC)", "EXPIRES (UTC)"
    )?;
    for capture in &response.captures {
        writeln!(out, "{}", list_line(capture))?;
    }
    if response.captures.is_empty() {
        eprintln!("pcap: no stored captures");
    }
    Ok(())
}

fn list_line(capture: &StoredCapture) -> String {
    format!(
        "{:<26} {:<12} {:>12}  {:<20} {:<20}",
        capture.id,
        capture.owner,
        capture.size,
        utc(capture.created_ns),
        if capture.expires_ns == 0 {
            "never".to_owned()
        } else {
            utc(capture.expires_ns)
        },
    )
}

async fn download(connection: &Connection, id: &str, write: Option<&Path>) -> anyhow::Result<()> {
    let mut client = connection.client().await?;
    let url = client
        .get_download_url(connection.request(GetDownloadUrlRequest { id: id.to_owned() })?)
        .await
        .map_err(|s| refused(&s))?
        .into_inner();
    let size = url.capture.as_ref().map_or(0, |c| c.size);
    let http = http_client(connection)?;
    let mut response = http
        .get(&url.url)
        .send()
        .await
        .context("cannot reach the capture store")?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        bail!(
            "the capture store refused the download: HTTP {status}{}",
            s3_message(&body)
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    let total = response.content_length().unwrap_or(size);
    let default_path = PathBuf::from(format!("{id}.pcapng"));
    let target = write.unwrap_or(&default_path);
    let to_stdout = target.as_os_str() == "-";
    // A failed download leaves no half file under the final name.
    let partial = target.with_extension("pcapng.part");
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        Box::new(io::BufWriter::new(File::create(&partial).with_context(
            || format!("cannot create {}", partial.display()),
        )?))
    };
    let mut progress = Progress::new(total);
    let result = async {
        while let Some(chunk) = response.chunk().await.context("the download broke off")? {
            out.write_all(&chunk).context("cannot write the capture")?;
            progress.add(chunk.len() as u64);
        }
        out.flush().context("cannot write the capture")?;
        anyhow::Ok(())
    }
    .await;
    drop(out);
    progress.finish();
    if let Err(error) = result {
        if !to_stdout {
            let _ = fs::remove_file(&partial);
        }
        return Err(error);
    }
    if progress.done != total {
        if !to_stdout {
            let _ = fs::remove_file(&partial);
        }
        bail!(
            "the download ended after {} of {total} bytes",
            progress.done
        );
    }
    if !to_stdout {
        fs::rename(&partial, target).with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.display(),
                target.display()
            )
        })?;
        eprintln!(
            "pcap: {} holds capture {id} ({total} bytes)",
            target.display()
        );
    }
    Ok(())
}

/// The `<Message>` of an S3 error document.
fn s3_message(body: &str) -> Option<&str> {
    let start = body.find("<Message>")? + "<Message>".len();
    let end = body[start..].find("</Message>")? + start;
    Some(&body[start..end])
}

/// HTTP for the presigned URL: the system's roots plus `--ca`, or no
/// verification with `--insecure`; no overall timeout, as a download takes
/// as long as the capture is big.
fn http_client(connection: &Connection) -> anyhow::Result<reqwest::Client> {
    connect::https_client(connection.ca.as_deref(), connection.insecure, None)
}

/// Bytes so far on stderr: a redrawn line on a terminal, else a line every
/// few seconds and one at the end.
struct Progress {
    total: u64,
    done: u64,
    terminal: bool,
    last: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        Self {
            total,
            done: 0,
            terminal: io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn add(&mut self, bytes: u64) {
        self.done += bytes;
        let every = if self.terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(5)
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.show();
        }
    }

    fn show(&self) {
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let line = format!(
            "pcap: downloaded {} of {} bytes ({percent}%)",
            self.done, self.total
        );
        if self.terminal {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        self.show();
        if self.terminal {
            eprintln!();
        }
    }
}

/// `2026-06-01 12:00:00` (UTC) for nanoseconds since the epoch.
pub fn utc(ns: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(i64::try_from(ns).unwrap_or(i64::MAX))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// How long until `ns`, in words: "in 14m 59s", or "expired".
pub fn until(ns: u64) -> String {
    let now = pcap_proto::unix_now_ns();
    let Some(left) = ns.checked_sub(now) else {
        return "expired".to_owned();
    };
    let seconds = left / 1_000_000_000;
    match seconds {
        0..60 => format!("in {seconds}s"),
        60..3600 => format!("in {}m {}s", seconds / 60, seconds % 60),
        _ => format!("in {}h {}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn s3_error_messages() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                    <Message>Request has expired</Message></Error>";
        assert_eq!(s3_message(body), Some("Request has expired"));
        assert_eq!(s3_message("nope"), None);
    }
}
