//! Policy tag → source app GUID, from the rules the VXLAN policy agent
//! writes into its `vpa--<micros>` chain of the filter table:
//!
//! ```text
//! -A vpa--1700000000000001 -s 10.255.77.3/32 -m comment --comment "src:<guid>" -j MARK --set-xmark 0x1/0xffffffff
//! -A vpa--1700000000000001 -d 10.255.78.3/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x1 -m comment --comment "src:<guid>_dst:<guid>" -j ACCEPT
//! ```
//!
//! The MARK rules exist on the source app's cell; on the destination cell
//! the ACCEPT rules name the source of every tag that may reach a local
//! app. Both are read.

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

/// How often the rules are read again at most, when an unknown tag shows up.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Parses `iptables-save -t filter` output into tag → source app GUID.
pub fn parse_iptables_save(text: &str) -> HashMap<u16, String> {
    let mut marks = HashMap::new();
    let mut accepts = HashMap::new();
    for line in text.lines() {
        if !line.starts_with("-A vpa--") {
            continue;
        }
        let words = split_words(line);
        let value = |flag: &str| {
            words
                .windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1].as_str())
        };
        let Some(source) = value("--comment").and_then(|c| c.strip_prefix("src:")) else {
            continue;
        };
        let source = source.split("_dst:").next().unwrap_or(source).to_owned();
        let negated = words.windows(2).any(|w| w[0] == "!" && w[1] == "--mark");
        if let Some(tag) = value("--set-xmark").and_then(parse_tag) {
            marks.insert(tag, source);
        } else if let Some(tag) = value("--mark").and_then(parse_tag)
            && !negated
        {
            accepts.entry(tag).or_insert(source);
        }
    }
    // A MARK rule names the source for sure; ACCEPT rules fill the rest.
    accepts.extend(marks);
    accepts
}

/// `0x1/0xffffffff` or `0x1` → 1 (the low 16 bits: what GBP carries).
fn parse_tag(value: &str) -> Option<u16> {
    let mark = value.split('/').next()?;
    let mark = u32::from_str_radix(mark.strip_prefix("0x")?, 16).ok()?;
    let tag = (mark & 0xffff) as u16;
    (tag != 0 && mark >> 16 == 0).then_some(tag)
}

/// Splits a rule into words as iptables-save quotes them (`"a b"`, `\"`).
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The tag table, read from `iptables-save` and read again (at most once
/// per [`REFRESH_INTERVAL`]) when a tag is not in it.
pub struct Tags {
    by_tag: HashMap<u16, String>,
    command: Vec<String>,
    last_read: Option<Instant>,
    warned: bool,
}

impl Tags {
    /// A table read by running `command` (e.g. `iptables-save -t filter`).
    pub fn new(command: Vec<String>) -> Self {
        Self {
            by_tag: HashMap::new(),
            command,
            last_read: None,
            warned: false,
        }
    }

    /// A fixed table that is never read again (tests).
    pub fn fixed(tags: HashMap<u16, String>) -> Self {
        Self {
            by_tag: tags,
            command: Vec::new(),
            last_read: None,
            warned: false,
        }
    }

    /// The source app GUID of `tag`, reading the rules again if it is
    /// unknown and they were not read in the last second.
    pub fn source(&mut self, tag: u16) -> Option<&str> {
        if !self.by_tag.contains_key(&tag)
            && self
                .last_read
                .is_none_or(|t| t.elapsed() >= REFRESH_INTERVAL)
        {
            self.refresh();
        }
        self.by_tag.get(&tag).map(String::as_str)
    }

    /// Reads the rules now.
    pub fn refresh(&mut self) {
        let Some((program, args)) = self.command.split_first() else {
            return;
        };
        self.last_read = Some(Instant::now());
        match Command::new(program).args(args).output() {
            Ok(out) if out.status.success() => {
                self.by_tag = parse_iptables_save(&String::from_utf8_lossy(&out.stdout));
                tracing::debug!(tags = self.by_tag.len(), "read the policy agent's rules");
            }
            result => {
                if !self.warned {
                    self.warned = true;
                    let why = match result {
                        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(
                        "cannot read the policy agent's rules with {}: {why}; tags stay unresolved",
                        self.command.join(" ")
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "2f7dbbd5-8f44-4b2a-8d3b-5b0c1e9e0a11";
    const B: &str = "9c1e0d4a-1b2c-4d3e-8f40-112233445566";

    #[test]
    fn mark_and_accept_rules_in_iptables_save_format() {
        let text = format!(
            "# Generated by iptables-save v1.8.9 (nf_tables) on Sun Nov 22 00:00:00 2026\n\
             *filter\n\
             :INPUT ACCEPT [0:0]\n\
             :FORWARD ACCEPT [0:0]\n\
             :vpa--1700000000000001 - [0:0]\n\
             -A FORWARD -j vpa--1700000000000001\n\
             -A vpa--1700000000000001 -s 10.255.77.3/32 -m comment --comment \"src:{A}\" -j MARK --set-xmark 0x1/0xffffffff\n\
             -A vpa--1700000000000001 -d 10.255.77.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x2 -m conntrack --ctstate INVALID,NEW,UNTRACKED -j LOG --log-prefix \"OK_0002_{A} \"\n\
             -A vpa--1700000000000001 -d 10.255.77.4/32 -p tcp -m tcp --dport 8080 -m mark --mark 0x2 -m comment --comment \"src:{B}_dst:{A}\" -j ACCEPT\n\
             -A overlay--e49f448e-54d2-4c33-61 -s 10.255.77.3/32 -o silk-vtep -m mark ! --mark 0x0 -j ACCEPT\n\
             -A overlay--e49f448e-54d2-4c33-61 -d 10.255.77.3/32 -m mark --mark 0xffff0000 -j ACCEPT\n\
             COMMIT\n"
        );
        let tags = parse_iptables_save(&text);
        assert_eq!(tags.len(), 2, "{tags:?}");
        assert_eq!(tags[&1], A);
        assert_eq!(tags[&2], B);
    }

    #[test]
    fn unquoted_comments_and_upper_tags() {
        let text = format!(
            "-A vpa--1 -s 10.255.77.3/32 -m comment --comment src:{A} -j MARK --set-xmark 0xABCD/0xffffffff\n\
             -A vpa--1 -s 10.255.77.5/32 -m comment --comment \"not a source\" -j MARK --set-xmark 0x7/0xffffffff\n\
             -A vpa--1 -s 10.255.77.6/32 -m comment --comment \"src:{B}\" -j MARK --set-xmark 0xffff0000/0xffffffff\n"
        );
        let tags = parse_iptables_save(&text);
        assert_eq!(tags.len(), 1, "{tags:?}");
        assert_eq!(tags[&0xabcd], A);
    }

    #[test]
    fn words_follow_iptables_save_quoting() {
        assert_eq!(
            split_words(r#"-A x --comment "a b \"c\"" -j ACCEPT"#),
            ["-A", "x", "--comment", "a b \"c\"", "-j", "ACCEPT"]
        );
    }

    #[test]
    fn a_fixed_table_is_never_read() {
        let mut tags = Tags::fixed(HashMap::from([(1, A.to_owned())]));
        assert_eq!(tags.source(1), Some(A));
        assert_eq!(tags.source(2), None);
    }
}
