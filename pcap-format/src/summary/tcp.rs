//! TCP segments: flags, sequence numbers, window, options, length.

use std::fmt;

use etherparse::{TcpOptionElement, TcpOptionReadError, TcpSlice};

/// Writes the part after the ports, e.g.
/// `Flags [P.], seq 1:101, ack 7, win 502, length 100`.
///
/// `ip_payload_len` is the segment length the IP header declares; the
/// segment's data may be cut shorter by the capture.
pub(super) fn summarize(
    f: &mut fmt::Formatter<'_>,
    segment: &TcpSlice<'_>,
    ip_payload_len: usize,
) -> fmt::Result {
    let data_len = ip_payload_len.saturating_sub(segment.header_slice().len());
    let seq = segment.sequence_number();

    write!(f, "Flags [{}]", Flags(segment))?;
    // Like tcpdump, show the sequence number only where it tells something.
    if data_len > 0 {
        write!(f, ", seq {seq}:{}", seq.wrapping_add(data_len as u32))?;
    } else if segment.syn() || segment.fin() || segment.rst() {
        write!(f, ", seq {seq}")?;
    }
    if segment.ack() {
        write!(f, ", ack {}", segment.acknowledgment_number())?;
    }
    write!(f, ", win {}", segment.window_size())?;
    if segment.urg() {
        write!(f, ", urg {}", segment.urgent_pointer())?;
    }
    if !segment.options().is_empty() {
        write!(f, ", options [{}]", Options(segment))?;
    }
    write!(f, ", length {data_len}")
}

/// The flags as tcpdump writes them: `S`, `F`, `P`, `R`, `U`, `E`, `W`,
/// `.` for ACK, or `none`.
struct Flags<'a>(&'a TcpSlice<'a>);

impl fmt::Display for Flags<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let segment = self.0;
        let flags = [
            (segment.fin(), 'F'),
            (segment.syn(), 'S'),
            (segment.rst(), 'R'),
            (segment.psh(), 'P'),
            (segment.ack(), '.'),
            (segment.urg(), 'U'),
            (segment.ece(), 'E'),
            (segment.cwr(), 'W'),
        ];
        let mut any = false;
        for (set, letter) in flags {
            if set {
                fmt::Write::write_char(f, letter)?;
                any = true;
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// The options as tcpdump writes them, e.g. `mss 1460,sackOK,nop,wscale 7`.
struct Options<'a>(&'a TcpSlice<'a>);

impl fmt::Display for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, option) in self.0.options_iterator().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            match option {
                Ok(TcpOptionElement::Noop) => f.write_str("nop")?,
                Ok(TcpOptionElement::MaximumSegmentSize(mss)) => write!(f, "mss {mss}")?,
                Ok(TcpOptionElement::WindowScale(shift)) => write!(f, "wscale {shift}")?,
                Ok(TcpOptionElement::SelectiveAcknowledgementPermitted) => f.write_str("sackOK")?,
                Ok(TcpOptionElement::SelectiveAcknowledgement(first, rest)) => {
                    let blocks = std::iter::once(first).chain(rest.into_iter().flatten());
                    write!(f, "sack {} ", blocks.clone().count())?;
                    for (left, right) in blocks {
                        write!(f, "{{{left}:{right}}}")?;
                    }
                }
                Ok(TcpOptionElement::Timestamp(value, echo)) => {
                    write!(f, "TS val {value} ecr {echo}")?;
                }
                Err(TcpOptionReadError::UnknownId(kind)) => return write!(f, "unknown-{kind}"),
                Err(_) => return f.write_str("[bad opt]"),
            }
        }
        Ok(())
    }
}
