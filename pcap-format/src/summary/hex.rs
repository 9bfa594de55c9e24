//! tcpdump's raw dumps (`print-ascii.c`): `-x`, `-X`, `-A`.

use std::fmt::Write as _;

const BYTES_PER_LINE: usize = 16;
/// Width of a `-X` line's hex part: eight groups of ` xxxx`.
const HEX_WIDTH: usize = 40;

/// `-x`: `\t0x0000:  4500 0054 ...`, eight groups of two bytes a line.
pub(super) fn hex(out: &mut String, indent: &str, bytes: &[u8], offset: usize) {
    for (line, chunk) in bytes.chunks(BYTES_PER_LINE).enumerate() {
        let _ = write!(out, "{indent}0x{:04x}: ", offset + line * BYTES_PER_LINE);
        hex_groups(out, chunk);
    }
}

/// ` xxxx` for every two bytes of `chunk`, ` xx` for a last odd one.
fn hex_groups(out: &mut String, chunk: &[u8]) {
    for pair in chunk.chunks(2) {
        match pair {
            [a, b] => {
                let _ = write!(out, " {a:02x}{b:02x}");
            }
            [a] => {
                let _ = write!(out, " {a:02x}");
            }
            _ => {}
        }
    }
}

/// `-X`: the hex of [`hex`] padded to its full width, then the bytes as
/// ASCII (`.` for what is not printable).
pub(super) fn hex_and_ascii(out: &mut String, indent: &str, bytes: &[u8], offset: usize) {
    for (line, chunk) in bytes.chunks(BYTES_PER_LINE).enumerate() {
        let mut hex = String::with_capacity(HEX_WIDTH);
        hex_groups(&mut hex, chunk);
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        let _ = write!(
            out,
            "{indent}0x{:04x}: {hex:<HEX_WIDTH$}  {ascii}",
            offset + line * BYTES_PER_LINE
        );
    }
}

/// `-A`: the bytes as text after a newline, `.` for what is neither
/// printable nor a tab, space or newline; a CR shows only inside a line.
pub(super) fn ascii(out: &mut String, bytes: &[u8]) {
    out.push('\n');
    for (index, &byte) in bytes.iter().enumerate() {
        let left = bytes.len() - index - 1;
        if byte == b'\r' {
            if left > 1 && bytes[index + 1] != b'\n' {
                out.push('.');
            }
        } else if byte.is_ascii_graphic() || matches!(byte, b'\t' | b' ' | b'\n') {
            out.push(char::from(byte));
        } else {
            out.push('.');
        }
    }
}
