//! `pcap-agent capture -D`: the interfaces of the network namespace, in
//! tcpdump's `-D` layout and libpcap's order.
//!
//! Only network interfaces are listed, the ones `-i` accepts. libpcap also
//! lists pseudo-devices (`any`, `nflog`, `nfqueue`, `dbus-system`,
//! `dbus-session`, `bluetooth-monitor`, `usbmon*`) that we cannot capture
//! on, so our numbers skip them: `tcpdump -D` may number the same
//! interface differently. Like libpcap we ask the driver (ethtool's
//! `ETHTOOL_GLINK`) whether the link is up, and say nothing when it
//! cannot tell.

use std::{fs, io};

use anyhow::Context as _;

use crate::ethtool_link::Link;

/// One line of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub index: u32,
    pub up: bool,
    pub running: bool,
    pub loopback: bool,
    /// `None` where it does not apply (loopback) or the driver cannot tell.
    pub connected: Option<bool>,
}

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

impl Listed {
    fn read(name: &str) -> io::Result<Self> {
        let dir = format!("/sys/class/net/{name}");
        let read =
            |file: &str| fs::read_to_string(format!("{dir}/{file}")).map(|s| s.trim().to_owned());
        let number = |text: &str| {
            let (digits, radix) = match text.strip_prefix("0x") {
                Some(hex) => (hex, 16),
                None => (text, 10),
            };
            u32::from_str_radix(digits, radix)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        };
        let flags = number(&read("flags")?)?;
        let index = number(&read("ifindex")?)?;
        let up = flags & IFF_UP != 0;
        let loopback = flags & IFF_LOOPBACK != 0;
        // The kernel's IFF_RUNNING (dev_get_flags): up, and the operational
        // state up or unknown.
        let operstate = read("operstate").unwrap_or_default();
        let running = up && matches!(operstate.as_str(), "up" | "unknown");
        let connected = if loopback {
            None
        } else {
            match crate::ethtool_link::link(name) {
                Link::Connected => Some(true),
                Link::Disconnected => Some(false),
                Link::NotApplicable => None,
            }
        };
        Ok(Self {
            name: name.to_owned(),
            index,
            up,
            running,
            loopback,
            connected,
        })
    }

    /// libpcap's figure of merit (`get_figure_of_merit`, pcap.c): lower
    /// is listed first; ties keep the interface index order.
    fn merit(&self) -> (u32, u32) {
        let mut n = 0;
        if !self.running {
            n |= 0x8000_0000;
        }
        if !self.up {
            n |= 0x4000_0000;
        }
        if self.loopback {
            n |= 0x2000_0000;
        }
        if self.connected == Some(false) {
            n |= 0x1000_0000;
        }
        (n, self.index)
    }

    /// tcpdump's bracketed flags: `[Up, Running, Connected]`.
    pub fn flags_text(&self) -> String {
        let mut words: Vec<&str> = [
            (self.up, "Up"),
            (self.running, "Running"),
            (self.loopback, "Loopback"),
        ]
        .into_iter()
        .filter_map(|(set, word)| set.then_some(word))
        .collect();
        if words.is_empty() {
            words.push("none");
        }
        match self.connected {
            Some(true) => words.push("Connected"),
            Some(false) => words.push("Disconnected"),
            None => {}
        }
        format!("[{}]", words.join(", "))
    }
}

/// The interfaces of the current network namespace, in libpcap's order.
pub fn list() -> anyhow::Result<Vec<Listed>> {
    let mut listed = Vec::new();
    for entry in fs::read_dir("/sys/class/net").context("cannot list /sys/class/net")? {
        let entry = entry.context("cannot list /sys/class/net")?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Interfaces can vanish while we look: skip those.
        if let Ok(interface) = Listed::read(&name) {
            listed.push(interface);
        }
    }
    listed.sort_by_key(Listed::merit);
    Ok(listed)
}

/// Prints the list as `tcpdump -D` does: `1.eth0 [Up, Running, Connected]`.
pub fn print(out: &mut impl io::Write) -> anyhow::Result<()> {
    for (i, interface) in list()?.iter().enumerate() {
        writeln!(
            out,
            "{}.{} {}",
            i + 1,
            interface.name,
            interface.flags_text()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(up: bool, running: bool, loopback: bool, connected: Option<bool>) -> Listed {
        Listed {
            name: "x".into(),
            index: 1,
            up,
            running,
            loopback,
            connected,
        }
    }

    #[test]
    fn flags_read_as_tcpdump_prints_them() {
        assert_eq!(
            listed(true, true, false, Some(true)).flags_text(),
            "[Up, Running, Connected]"
        );
        assert_eq!(
            listed(true, true, true, None).flags_text(),
            "[Up, Running, Loopback]"
        );
        assert_eq!(listed(false, false, true, None).flags_text(), "[Loopback]");
        assert_eq!(
            listed(true, false, false, Some(false)).flags_text(),
            "[Up, Disconnected]"
        );
        assert_eq!(
            listed(false, false, false, Some(false)).flags_text(),
            "[none, Disconnected]"
        );
    }
}
