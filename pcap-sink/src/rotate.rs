//! tcpdump's `-C`, `-G`, `-W` and `-z` for a capture written to files:
//! one [`RotatingWriter`], used by `pcap-agent capture -w` and by the CLI's
//! remote captures alike.
//!
//! * `-C SIZE`: before a packet, a file larger than SIZE million bytes is
//!   closed and the next one opened (tcpdump's check, so a file exceeds
//!   SIZE by at most one packet, plus its statistics blocks).
//! * `-G SECONDS`: a packet whose timestamp lies in a later multiple of
//!   SECONDS since the epoch than the file's starts a new file: files are
//!   aligned to the wall clock (UTC), not to the first packet as in
//!   tcpdump. A packet older than its file's interval (late, or out of
//!   order) goes into the current file. The first file, opened at start,
//!   takes the interval of the first packet if that is another (it is
//!   replaced while still empty): a file read with `-r` is split by its
//!   packets' times.
//! * `-W COUNT`: only the newest COUNT files this writer made are kept.
//! * `-z COMMAND`: `COMMAND FILE` runs on every file once it is complete,
//!   the last one too, in a process group of its own (a Ctrl-C in the
//!   terminal does not kill it); [`CaptureWriter::close`] waits for them.
//!
//! Names are tcpdump's (`MakeFilename`): with `-G` the `-w` name goes
//! through strftime (in UTC); with `-C` a number follows, from 1 for the
//! second file, or from 0 padded to the width of COUNT-1 with `-W`.
//!
//! Every file is complete: its own section header, every interface
//! described so far, every name record written so far, and at its close
//! one statistics block per interface, counting that file's packets.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use pcap_format::{CaptureWriter, FormatError, Interface, InterfaceStatistics, Packet};
use pcap_proto::flags::RotationFlags;
use pcap_proto::unix_now_ns as now_ns;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Makes the writer of one file (its section header) from the file.
pub type MakeWriter =
    Box<dyn FnMut(Box<dyn Write + Send>) -> io::Result<Box<dyn CaptureWriter + Send>> + Send>;

/// Why rotation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("-G names files through strftime: the -w name {0:?} must be UTF-8")]
    NotUtf8(PathBuf),
    #[error("-w {0:?}: {1} is not a strftime conversion (-G names files through strftime)")]
    BadConversion(String, String),
    #[error("-z {0:?}: no such program ({1})")]
    NoCommand(PathBuf, String),
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<RotateError> for io::Error {
    fn from(error: RotateError) -> Self {
        match error {
            RotateError::Io(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }
}

/// What to rotate, from the flags and the `-w` path.
#[derive(Clone, Debug)]
pub struct Policy {
    names: Names,
    /// `-C` in bytes.
    max_bytes: Option<u64>,
    /// `-G` in nanoseconds.
    period_ns: Option<u64>,
    /// `-W`.
    count: Option<u32>,
    /// `-z`.
    command: Option<PathBuf>,
}

impl Policy {
    /// The rotation `flags` ask for on `path`, or `None` when they ask for
    /// none. The flags were checked ([`RotationFlags::check`]); this checks
    /// the name's strftime conversions and finds the `-z` program.
    pub fn new(path: &Path, flags: &RotationFlags) -> Result<Option<Self>, RotateError> {
        if !flags.is_set() {
            return Ok(None);
        }
        let strftime = if flags.rotate_seconds.is_some() {
            let text = path
                .to_str()
                .ok_or_else(|| RotateError::NotUtf8(path.to_owned()))?;
            check_strftime(text)?;
            Some(text.to_owned())
        } else {
            None
        };
        if let Some(command) = &flags.post_rotate {
            which::which(command)
                .map_err(|e| RotateError::NoCommand(command.clone(), e.to_string()))?;
        }
        Ok(Some(Self {
            names: Names {
                path: path.to_owned(),
                strftime,
                numbered: flags.file_size.is_some(),
                width: flags.file_count.map_or(0, count_width),
            },
            max_bytes: flags.file_size.map(|mb| mb * 1_000_000),
            period_ns: flags.rotate_seconds.map(|s| s * NANOS_PER_SECOND),
            count: flags.file_count,
            command: flags.post_rotate.clone(),
        }))
    }
}

/// tcpdump's `getWflagChars`: the digits of COUNT-1.
fn count_width(count: u32) -> usize {
    let mut rest = count.saturating_sub(1);
    let mut width = 0;
    while rest > 0 {
        width += 1;
        rest /= 10;
    }
    width
}

fn check_strftime(text: &str) -> Result<(), RotateError> {
    // chrono reports an unknown conversion as an error item.
    if StrftimeItems::new(text).any(|item| matches!(item, Item::Error)) {
        let bad = text
            .match_indices('%')
            .map(|(at, _)| &text[at..text.len().min(at + 2)])
            .find(|conversion| StrftimeItems::new(conversion).any(|i| matches!(i, Item::Error)))
            .unwrap_or("%")
            .to_owned();
        return Err(RotateError::BadConversion(text.to_owned(), bad));
    }
    Ok(())
}

/// tcpdump's `MakeFilename`.
#[derive(Clone, Debug)]
struct Names {
    path: PathBuf,
    /// The name as a strftime format, with `-G`.
    strftime: Option<String>,
    /// `-C`: a number follows the name.
    numbered: bool,
    /// `-W`'s padding of the number.
    width: usize,
}

impl Names {
    /// The name of file `index` of the interval starting at `start_ns`.
    fn name(&self, start_ns: u64, index: u32) -> PathBuf {
        let mut name = match &self.strftime {
            Some(format) => {
                let seconds = i64::try_from(start_ns / NANOS_PER_SECOND).unwrap_or(i64::MAX);
                let time = DateTime::<Utc>::from_timestamp(seconds, 0).unwrap_or_default();
                let mut text = String::new();
                // Checked by Policy::new: every conversion is known.
                let _ = write!(text, "{}", time.format(format));
                PathBuf::from(text).into_os_string()
            }
            None => self.path.clone().into_os_string(),
        };
        if self.numbered && (index != 0 || self.width != 0) {
            name.push(format!("{index:0width$}", width = self.width));
        }
        PathBuf::from(name)
    }
}

/// The file being written.
struct Open {
    writer: Box<dyn CaptureWriter + Send>,
    path: PathBuf,
    /// The start of its `-G` interval (else of the capture).
    interval_ns: u64,
    opened_ns: u64,
    /// Packets per interface id.
    packets: Vec<u64>,
    total: u64,
    /// The caller wrote statistics blocks into it.
    caller_statistics: bool,
}

/// A [`CaptureWriter`] that writes a series of files as [`Policy`] says.
pub struct RotatingWriter {
    policy: Policy,
    make: MakeWriter,
    interfaces: Vec<Interface>,
    names: Vec<(Ipv4Addr, String)>,
    current: Option<Open>,
    /// The files made, oldest first (for `-W`).
    ring: VecDeque<PathBuf>,
    /// `-C`'s number of the current file.
    index: u32,
    /// Files opened so far.
    files: u64,
    /// `-z` commands not yet waited for.
    children: Vec<Child>,
}

impl RotatingWriter {
    /// Opens the first file now, so that a bad path fails at once and an
    /// empty capture still leaves a valid file.
    pub fn new(policy: Policy, make: MakeWriter) -> Result<Self, RotateError> {
        let mut this = Self {
            policy,
            make,
            interfaces: Vec::new(),
            names: Vec::new(),
            current: None,
            ring: VecDeque::new(),
            index: 0,
            files: 0,
            children: Vec::new(),
        };
        let now = now_ns();
        this.open(this.interval_of(now), now)?;
        Ok(this)
    }

    /// The files this writer made and keeps (`-W`), oldest first.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.ring.iter().map(PathBuf::as_path)
    }

    fn interval_of(&self, ns: u64) -> u64 {
        match self.policy.period_ns {
            Some(period) => ns - ns % period,
            None => 0,
        }
    }

    fn open(&mut self, interval_ns: u64, now: u64) -> Result<(), RotateError> {
        let path = self.policy.names.name(interval_ns, self.index);
        // A name made again is overwritten, and counts once.
        self.ring.retain(|made| *made != path);
        if let Some(count) = self.policy.count {
            while self.ring.len() >= count as usize {
                if let Some(oldest) = self.ring.pop_front() {
                    match std::fs::remove_file(&oldest) {
                        // -z may have moved it.
                        Err(e) if e.kind() != io::ErrorKind::NotFound => {
                            return Err(RotateError::Io(io::Error::new(
                                e.kind(),
                                format!("-W: cannot remove {}: {e}", oldest.display()),
                            )));
                        }
                        _ => {}
                    }
                }
            }
        }
        let file = File::create(&path).map_err(|source| RotateError::Create {
            path: path.clone(),
            source,
        })?;
        let mut writer = (self.make)(Box::new(file))?;
        for interface in &self.interfaces {
            writer.add_interface(interface).map_err(format_error)?;
        }
        if !self.names.is_empty() {
            let names: Vec<(Ipv4Addr, &str)> =
                self.names.iter().map(|(a, n)| (*a, n.as_str())).collect();
            writer.write_name_resolution(&names)?;
        }
        // A valid file from the start, whatever happens next.
        writer.flush()?;
        self.ring.push_back(path.clone());
        self.files += 1;
        self.current = Some(Open {
            writer,
            path,
            interval_ns,
            opened_ns: now,
            packets: Vec::new(),
            total: 0,
            caller_statistics: false,
        });
        Ok(())
    }

    /// Ends the current file: its statistics blocks (unless the caller
    /// wrote the final ones), flushed, closed, and `-z` started on it.
    fn close_current(&mut self, now: u64, statistics: bool) -> io::Result<()> {
        let Some(mut open) = self.current.take() else {
            return Ok(());
        };
        if statistics {
            for id in 0..self.interfaces.len() {
                let packets = open.packets.get(id).copied().unwrap_or(0);
                let comment = format!("{packets} packets written to this file");
                open.writer
                    .write_interface_statistics(&InterfaceStatistics {
                        interface_id: id as u32,
                        timestamp_ns: now,
                        start_time_ns: Some(open.opened_ns),
                        end_time_ns: Some(now),
                        user_delivered: Some(packets),
                        comment: Some(&comment),
                        ..InterfaceStatistics::default()
                    })?;
            }
        }
        open.writer.flush()?;
        drop(open.writer);
        self.children
            .retain_mut(|child| matches!(child.try_wait(), Ok(None)));
        if let Some(command) = &self.policy.command {
            let child = Command::new(command)
                .arg(&open.path)
                .stdin(Stdio::null())
                .process_group(0)
                .spawn()
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "-z: cannot run {} {}: {e}",
                            command.display(),
                            open.path.display()
                        ),
                    )
                })?;
            self.children.push(child);
        }
        Ok(())
    }

    /// Closes the current file and opens the next: same interval and the
    /// next number (`-C`), or a new interval numbered from 0 (`-G`).
    fn rotate(&mut self, interval_ns: u64, by_size: bool) -> io::Result<()> {
        let now = now_ns();
        self.close_current(now, true)?;
        if by_size {
            self.index += 1;
            if self.policy.count.is_some_and(|count| self.index >= count) {
                self.index = 0;
            }
        } else {
            self.index = 0;
        }
        Ok(self.open(interval_ns, now)?)
    }

    /// Removes the first file, which holds no packet, and opens the first
    /// file of `interval_ns` instead; `-z` does not run on it.
    fn replace_first(&mut self, interval_ns: u64) -> io::Result<()> {
        if let Some(open) = self.current.take() {
            drop(open.writer);
            self.ring.retain(|made| *made != open.path);
            self.files -= 1;
            std::fs::remove_file(&open.path)?;
        }
        Ok(self.open(interval_ns, now_ns())?)
    }

    fn current(&mut self) -> io::Result<&mut Open> {
        self.current
            .as_mut()
            .ok_or_else(|| io::Error::other("the rotating capture files were closed"))
    }
}

impl CaptureWriter for RotatingWriter {
    /// Describes the interface in the current file and in every later one.
    fn add_interface(&mut self, interface: &Interface) -> Result<u32, FormatError> {
        let id = self.current()?.writer.add_interface(interface)?;
        self.interfaces.push(interface.clone());
        Ok(id)
    }

    fn write_packet(&mut self, packet: &Packet<'_>) -> io::Result<()> {
        let interval = self.interval_of(packet.timestamp_ns);
        let max_bytes = self.policy.max_bytes;
        let only_file = self.files == 1;
        let open = self.current()?;
        let current_interval = open.interval_ns;
        let first = only_file && open.total == 0;
        if first && interval != current_interval {
            // The first file, still empty, takes its first packet's
            // interval: a capture that started just before a boundary, or
            // a file read with -r.
            self.replace_first(interval)?;
        } else if interval > current_interval {
            self.rotate(interval, false)?;
        } else if max_bytes.is_some_and(|max| open.total > 0 && open.writer.position() > max) {
            self.rotate(current_interval, true)?;
        }
        let open = self.current()?;
        open.writer.write_packet(packet)?;
        let id = packet.interface_id as usize;
        if open.packets.len() <= id {
            open.packets.resize(id + 1, 0);
        }
        open.packets[id] += 1;
        open.total += 1;
        Ok(())
    }

    /// The caller's statistics (the capture's end, or an interface gone)
    /// into the current file: `isb_usrdeliv` counts this file's packets;
    /// with several files, the other counters count the whole capture, as
    /// the comment says.
    fn write_interface_statistics(&mut self, stats: &InterfaceStatistics<'_>) -> io::Result<()> {
        let several = self.files > 1;
        let open = self.current()?;
        let packets = open
            .packets
            .get(stats.interface_id as usize)
            .copied()
            .unwrap_or(0);
        let comment = match (several, stats.comment) {
            (false, _) => stats.comment.map(str::to_owned),
            (true, Some(comment)) => Some(format!(
                "{comment} (this file: {packets} packets; the other counters are the whole \
                 capture's)"
            )),
            (true, None) => Some(format!(
                "this file: {packets} packets; the other counters are the whole capture's"
            )),
        };
        open.caller_statistics = true;
        open.writer
            .write_interface_statistics(&InterfaceStatistics {
                start_time_ns: if several {
                    Some(open.opened_ns)
                } else {
                    stats.start_time_ns
                },
                user_delivered: Some(packets),
                comment: comment.as_deref(),
                ..*stats
            })
    }

    /// Writes the names into the current file and every later one.
    fn write_name_resolution(&mut self, entries: &[(Ipv4Addr, &str)]) -> io::Result<()> {
        self.current()?.writer.write_name_resolution(entries)?;
        self.names
            .extend(entries.iter().map(|(a, n)| (*a, (*n).to_owned())));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(open) => open.writer.flush(),
            None => Ok(()),
        }
    }

    fn position(&self) -> u64 {
        self.current
            .as_ref()
            .map_or(0, |open| open.writer.position())
    }

    /// Closes the last file (with its statistics blocks, unless the
    /// caller wrote its own), runs `-z` on it, and waits for every `-z`
    /// command.
    fn close(&mut self) -> io::Result<()> {
        let statistics = self
            .current
            .as_ref()
            .is_some_and(|open| !open.caller_statistics);
        self.close_current(now_ns(), statistics)?;
        for mut child in self.children.drain(..) {
            child.wait()?;
        }
        Ok(())
    }
}

fn format_error(error: FormatError) -> RotateError {
    match error {
        FormatError::Io(e) => RotateError::Io(e),
        other @ FormatError::MixedLinkTypes { .. } => {
            RotateError::Io(io::Error::other(other.to_string()))
        }
    }
}

#[cfg(test)]
mod tests;
