//! Addresses and the IP header as the printers of several layers show
//! them: a leaf module, so the layers' files form a hierarchy.

use std::fmt;
use std::net::Ipv4Addr;

/// A MAC address as tcpdump writes it: `aa:bb:cc:dd:ee:ff`.
pub(super) struct Mac<'a>(pub(super) &'a [u8]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The IP header a transport printer needs: tcpdump's `bp2`.
#[derive(Clone, Copy)]
pub(super) struct IpHeader<'a> {
    /// The header's bytes (at least 20 or 40 captured).
    pub(super) bytes: &'a [u8],
    pub(super) version: u8,
}

/// What `ip_demux_print` hands a transport printer: the payload's captured
/// `bytes`, its `length` on the wire (its header included), the IP header
/// it came in, and whether it is a fragment.
#[derive(Clone, Copy)]
pub(super) struct Payload<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) length: usize,
    pub(super) ip: IpHeader<'a>,
    pub(super) fragmented: bool,
}

impl IpHeader<'_> {
    /// The protocol of the IPv4 header, or the first next header of IPv6.
    pub(super) fn protocol(&self) -> u8 {
        if self.version == 6 {
            self.bytes[6]
        } else {
            self.bytes[9]
        }
    }

    pub(super) fn source(&self) -> Addr<'_> {
        if self.version == 6 {
            Addr(&self.bytes[8..24])
        } else {
            Addr(&self.bytes[12..16])
        }
    }

    pub(super) fn destination(&self) -> Addr<'_> {
        if self.version == 6 {
            Addr(&self.bytes[24..40])
        } else {
            Addr(&self.bytes[16..20])
        }
    }

    /// The pseudo-header checksum sum of a `length`-byte `protocol`
    /// payload (tcpdump's `nextproto4_cksum` / `nextproto6_cksum`), as
    /// bytes to add to the payload's.
    pub(super) fn pseudo_header(&self, protocol: u8, length: usize) -> Vec<u8> {
        let mut pseudo = Vec::with_capacity(40);
        if self.version == 6 {
            pseudo.extend_from_slice(&self.bytes[8..24]);
            // tcpdump uses the final destination of a routing header; we
            // do not print routed packets (they are unsupported).
            pseudo.extend_from_slice(&self.bytes[24..40]);
            pseudo.extend_from_slice(&(length as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        } else {
            pseudo.extend_from_slice(&self.bytes[12..20]);
            pseudo.extend_from_slice(&[0, protocol]);
            pseudo.extend_from_slice(&(length as u16).to_be_bytes());
        }
        pseudo
    }
}

/// An IPv4 or IPv6 address as tcpdump writes it.
#[derive(Clone, Copy)]
pub(super) struct Addr<'a>(pub(super) &'a [u8]);

impl fmt::Display for Addr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.len() {
            4 => write!(
                f,
                "{}",
                Ipv4Addr::new(self.0[0], self.0[1], self.0[2], self.0[3])
            ),
            16 => ipv6(f, self.0),
            _ => Ok(()),
        }
    }
}

/// tcpdump's `addrtostr6`: the longest run of two or more zero words
/// becomes `::`, and an IPv4-compatible or -mapped address ends in dotted
/// decimal.
fn ipv6(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    let words: Vec<u16> = bytes
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]))
        .collect();
    let (mut best_base, mut best_len) = (None::<usize>, 0);
    let (mut cur_base, mut cur_len) = (None::<usize>, 0);
    for (i, &word) in words.iter().enumerate() {
        if word == 0 {
            if cur_base.is_none() {
                cur_base = Some(i);
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if cur_base.is_some() {
            if best_base.is_none() || cur_len > best_len {
                best_base = cur_base;
                best_len = cur_len;
            }
            cur_base = None;
        }
    }
    if cur_base.is_some() && (best_base.is_none() || cur_len > best_len) {
        best_base = cur_base;
        best_len = cur_len;
    }
    if best_base.is_some() && best_len < 2 {
        best_base = None;
    }
    for (i, &word) in words.iter().enumerate() {
        if let Some(base) = best_base
            && i >= base
            && i < base + best_len
        {
            if i == base {
                f.write_str(":")?;
            }
            continue;
        }
        if i != 0 {
            f.write_str(":")?;
        }
        if i == 6
            && best_base == Some(0)
            && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))
        {
            return write!(
                f,
                "{}",
                Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15])
            );
        }
        write!(f, "{word:x}")?;
    }
    if let Some(base) = best_base
        && base + best_len == 8
    {
        f.write_str(":")?;
    }
    Ok(())
}
