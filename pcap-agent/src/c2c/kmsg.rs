//! The kernel's iptables LOG lines, read from `/dev/kmsg`.
//!
//! A `/dev/kmsg` record is `<prio>,<seq>,<usecs since boot>,<flags>;<text>`;
//! a LOG line's text is the rule's prefix, then `IN= OUT= ... SRC= DST= ...
//! PROTO= SPT= DPT= ... MARK=`. The VXLAN policy agent's prefixes are
//! `OK_<tag>_<dst app guid>` (allowed by a policy) and
//! `DENY_C2C_<container handle>` (no policy), each cut to 28 characters.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom},
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt as _,
};

use nix::time::{ClockId, clock_gettime};

use super::packet::Flow;

/// What a LOG line says about a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `OK_<tag>_...`: a c2c policy allowed it.
    Allowed { tag: String },
    /// `DENY_C2C_...`: no c2c policy allowed it.
    Denied,
}

impl Verdict {
    /// Text for a packet comment.
    pub fn describe(&self) -> String {
        match self {
            Self::Allowed { tag } => format!("verdict OK_{tag} (allowed by policy)"),
            Self::Denied => "verdict DENY_C2C (denied: no policy)".to_owned(),
        }
    }
}

/// One c2c LOG line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Allowed or denied, from the prefix.
    pub verdict: Verdict,
    /// The whole prefix, e.g. `OK_0001_2f7dbbd5-8f44-4b2a-8d`.
    pub prefix: String,
    /// The packet's addresses, protocol and ports (`SRC=`, `DST=`, `PROTO=`,
    /// `SPT=`, `DPT=`).
    pub flow: Flow,
    /// `MARK=`, when the line has it.
    pub mark: Option<u32>,
    /// Microseconds since boot (the record's time stamp), when known.
    pub boot_us: Option<u64>,
}

/// Parses a `/dev/kmsg` record, or the text of a LOG line alone (as
/// `dmesg` or kern.log show it, after the time stamp). Lines that are not
/// c2c LOG lines give `None`.
pub fn parse_record(record: &str) -> Option<LogLine> {
    let first = record.lines().next()?;
    let (boot_us, text) = match first.split_once(';') {
        Some((head, text)) if head.split(',').count() >= 4 => {
            (head.split(',').nth(2).and_then(|u| u.parse().ok()), text)
        }
        _ => (None, first),
    };
    let mut line = parse_text(text)?;
    line.boot_us = boot_us;
    Some(line)
}

fn parse_text(text: &str) -> Option<LogLine> {
    let at = text.find(" IN=")?;
    let prefix = text[..at].trim();
    // `dmesg`/kern.log put a time stamp before the prefix.
    let prefix = prefix.rsplit(' ').next().unwrap_or(prefix);
    let verdict = if prefix.starts_with("DENY_C2C_") {
        Verdict::Denied
    } else {
        let tag = prefix.strip_prefix("OK_")?.split('_').next()?;
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        Verdict::Allowed {
            tag: tag.to_owned(),
        }
    };
    let fields = &text[at..];
    let field = |name: &str| {
        fields
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
    };
    let proto = match field("PROTO")? {
        "TCP" => 6,
        "UDP" => 17,
        "ICMP" => 1,
        other => other.parse().ok()?,
    };
    let port = |name| field(name).and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(LogLine {
        verdict,
        prefix: prefix.to_owned(),
        flow: Flow {
            src: field("SRC")?.parse::<Ipv4Addr>().ok()?,
            dst: field("DST")?.parse::<Ipv4Addr>().ok()?,
            proto,
            sport: port("SPT"),
            dport: port("DPT"),
        },
        mark: field("MARK")
            .and_then(|m| u32::from_str_radix(m.strip_prefix("0x").unwrap_or(m), 16).ok()),
        boot_us: None,
    })
}

/// `/dev/kmsg`, opened non-blocking at its end: only lines logged after
/// the capture started are read.
pub struct Kmsg {
    file: File,
    /// Unix time minus boot time, in nanoseconds, to turn record time
    /// stamps into packet time.
    boot_to_unix_ns: i128,
}

impl Kmsg {
    pub fn open() -> io::Result<Self> {
        Self::open_path("/dev/kmsg")
    }

    pub fn open_path(path: &str) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)?;
        file.seek(SeekFrom::End(0))?;
        let ns = |clock| {
            clock_gettime(clock)
                .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
                .map_err(io::Error::from)
        };
        let boot_to_unix_ns = ns(ClockId::CLOCK_REALTIME)? - ns(ClockId::CLOCK_MONOTONIC)?;
        Ok(Self {
            file,
            boot_to_unix_ns,
        })
    }

    /// The c2c LOG lines logged since the last call, with their time
    /// stamps in Unix nanoseconds.
    pub fn read_new(&mut self) -> Vec<(u64, LogLine)> {
        let mut lines = Vec::new();
        let mut buffer = vec![0; 8192];
        loop {
            match self.file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(line) = parse_record(&String::from_utf8_lossy(&buffer[..n])) {
                        let unix = line.boot_us.map_or(0, |us| {
                            (i128::from(us) * 1000 + self.boot_to_unix_ns).max(0) as u64
                        });
                        lines.push((unix, line));
                    }
                }
                // Records were overwritten before we read them: go on.
                Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // EAGAIN: nothing more for now
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ok_record_from_dev_kmsg() {
        let record = "4,1234,22246987902,-;OK_0001_2f7dbbd5-8f44-4b2a-8d IN=silk-vtep OUT=s-010255078003 MAC=ee:ee:0a:ff:4e:03:ee:ee:0a:ff:4d:00:08:00 SRC=10.255.77.3 DST=10.255.78.3 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=35333 DF PROTO=TCP SPT=41330 DPT=8080 WINDOW=64240 RES=0x00 SYN URGP=0 MARK=0x1 \n SUBSYSTEM=net\n";
        let line = parse_record(record).unwrap();
        assert_eq!(
            line.verdict,
            Verdict::Allowed {
                tag: "0001".to_owned()
            }
        );
        assert_eq!(line.prefix, "OK_0001_2f7dbbd5-8f44-4b2a-8d");
        assert_eq!(line.boot_us, Some(22_246_987_902));
        assert_eq!(line.mark, Some(1));
        assert_eq!(
            line.flow,
            Flow {
                src: Ipv4Addr::new(10, 255, 77, 3),
                dst: Ipv4Addr::new(10, 255, 78, 3),
                proto: 6,
                sport: 41330,
                dport: 8080,
            }
        );
        assert_eq!(
            line.verdict.describe(),
            "verdict OK_0001 (allowed by policy)"
        );
    }

    #[test]
    fn a_deny_line_as_kern_log_shows_it() {
        // The seed's line, joined as the kernel writes it.
        let text = "2019-04-18T18:01:05.306552+00:00 localhost kernel: [22246.987902] DENY_C2C_f13ffea0-9d0d-4ee9- IN=s-010255077003 OUT=s-010255077004 MAC=aa:aa:0a:ff:4d:03:ee:ee:0a:ff:4d:03:08:00 SRC=10.255.77.3 DST=10.255.77.4 LEN=60 TOS=0x00 PREC=0x00 TTL=63 ID=12504 DF PROTO=TCP SPT=39304 DPT=8080 WINDOW=27400 RES=0x00 SYN URGP=0";
        let line = parse_record(text).unwrap();
        assert_eq!(line.verdict, Verdict::Denied);
        assert_eq!(line.prefix, "DENY_C2C_f13ffea0-9d0d-4ee9-");
        assert_eq!(line.boot_us, None);
        assert_eq!(line.mark, None);
        assert_eq!(line.flow.sport, 39304);
        assert_eq!(line.flow.dst, Ipv4Addr::new(10, 255, 77, 4));
    }

    #[test]
    fn other_lines_are_not_c2c_verdicts() {
        for text in [
            "6,1,2,-;eth0: link up",
            "4,1,2,-;DENY_e49f448e-54d2-4c33-61a3 IN=s-010255077003 OUT=eth0 SRC=10.255.77.3 DST=8.8.8.8 PROTO=UDP SPT=1 DPT=53",
            "4,1,2,-;OK_zz_x IN=a OUT=b SRC=1.2.3.4 DST=1.2.3.5 PROTO=TCP SPT=1 DPT=2",
        ] {
            assert_eq!(parse_record(text), None, "{text}");
        }
    }
}
