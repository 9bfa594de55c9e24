//! Finding the names libpcap would look up while compiling, before it does.
//!
//! libpcap resolves a name when an identifier stands where an address
//! goes: `host NAME` (and a bare `src NAME`, `dst NAME`, ...) calls
//! `getaddrinfo`, which asks DNS; `net NAME` calls `getnetbyname_r`; `ether
//! host NAME` calls `ether_hostton` (`/etc/ethers`, or NIS). A filter
//! compiled inside the agent must do none of that: a resolver that does
//! not answer would hold the capture, and the answers would tell the
//! caller about names it cannot otherwise see. So [`find_name`] reads the
//! expression as libpcap 1.10's scanner (`scanner.l`) does and follows the
//! qualifiers the way its grammar (`grammar.y`) hands them to each
//! identifier, and [`crate::compile()`] refuses an expression with a name
//! before libpcap sees it.
//!
//! Identifiers stay allowed where libpcap looks them up in local tables
//! only: port and port-range names (`port http`, `/etc/services`), protocol
//! names (`ip proto \tcp`, `/etc/protocols` and libpcap's own table) and the
//! keyword-like names after `type`, `subtype`, `dir`, `llc` and the pflog
//! fields. Everywhere else an identifier is refused, including places where
//! libpcap would only have reported a syntax error: when in doubt, refuse.
//!
//! The qualifier an identifier inherits (`port http or https`: `https` is a
//! port) is tracked as libpcap's grammar passes it on: through `and`, `or`,
//! `not` and parentheses, from the last `[proto] [dir] [type]` head; any
//! other term (a bare protocol, a comparison, `less 100`, ...) leaves no
//! qualifier, after which a bare identifier is a syntax error in libpcap.

/// Where an identifier stands, as far as name lookups go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Position {
    /// A host address (`host`, `src`, `dst`, `gateway`, ...): DNS.
    Host,
    /// A link-layer host (`ether host`, `ether src`, ...): `/etc/ethers`.
    EtherHost,
    /// A network (`net`): `getnetbyname_r`.
    Net,
    /// A port or port range name: `/etc/services`.
    Port,
    /// A protocol name: `/etc/protocols` or libpcap's tables.
    Protocol,
    /// No qualifier: libpcap reports a syntax error, or we lost track.
    Unknown,
}

/// What kind of name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    /// A host name (or an identifier where libpcap would take one).
    Host,
    /// An Ethernet host name (`/etc/ethers`).
    EtherHost,
    /// A network name (`/etc/networks`).
    Net,
}

/// A name the expression asks libpcap to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// The identifier, as libpcap would look it up (without a leading `\`).
    pub text: String,
    /// What it names.
    pub kind: NameKind,
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = &self.text;
        match self.kind {
            NameKind::Host => write!(
                f,
                "host names are not resolved: use an IP address instead of {text:?}"
            ),
            NameKind::EtherHost => write!(
                f,
                "Ethernet host names are not resolved: use a MAC address instead of {text:?}"
            ),
            NameKind::Net => write!(
                f,
                "network names are not resolved: use an address and prefix length \
                 (e.g. 10.0.0.0/8) instead of {text:?}"
            ),
        }
    }
}

/// The first name in `expression` that libpcap would resolve (or might:
/// see the module documentation), if any.
pub fn find_name(expression: &str) -> Option<Name> {
    let tokens = tokens(expression.as_bytes());
    let mut current = Position::Unknown;
    // The position in force before each open parenthesis.
    let mut saved: Vec<Position> = Vec::new();
    // A protocol qualifier (`ip`, `ether`, ...) that starts a head.
    let mut link_head = false;
    for (i, token) in tokens.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| &tokens[p]);
        let next = tokens.get(i + 1);
        match token {
            Token::Id(text) => {
                if previous.is_some_and(|p| matches!(p, Token::Keyword(k) if k.takes_table_name()))
                {
                    current = Position::Unknown;
                    continue;
                }
                let kind = match current {
                    Position::Port | Position::Protocol => continue,
                    // `host \\1.2.3.4`: getaddrinfo parses an address
                    // without asking anyone.
                    Position::Host | Position::Unknown
                        if std::str::from_utf8(text)
                            .is_ok_and(|t| t.parse::<std::net::IpAddr>().is_ok()) =>
                    {
                        continue;
                    }
                    Position::EtherHost => NameKind::EtherHost,
                    Position::Net => NameKind::Net,
                    Position::Host | Position::Unknown => NameKind::Host,
                };
                return Some(Name {
                    text: String::from_utf8_lossy(text).into_owned(),
                    kind,
                });
            }
            Token::Keyword(keyword) => match keyword.class() {
                Class::Protocol { link } => {
                    if next.is_some_and(|n| matches!(n, Token::Keyword(k) if k.continues_head())) {
                        link_head = link;
                    } else {
                        current = Position::Unknown;
                    }
                }
                Class::Direction => {
                    current = if link_head {
                        Position::EtherHost
                    } else {
                        Position::Host
                    };
                }
                Class::Address(position) => {
                    current = match position {
                        Position::Host if link_head => Position::EtherHost,
                        other => other,
                    };
                    link_head = false;
                }
                Class::Logic => {}
                Class::Other => {
                    current = Position::Unknown;
                    link_head = false;
                }
            },
            Token::Punct(b'(') => saved.push(current),
            Token::Punct(b')') => current = saved.pop().unwrap_or(Position::Unknown),
            // An address or number in an identifier's place keeps the
            // qualifier for what follows `and`/`or`, and so does `!`.
            Token::Literal | Token::Punct(b'!') => {}
            Token::Punct(_) | Token::Error => {
                current = Position::Unknown;
                link_head = false;
            }
        }
        if !matches!(token, Token::Keyword(k) if matches!(k.class(), Class::Protocol { .. } | Class::Direction | Class::Logic))
        {
            link_head = false;
        }
    }
    None
}

/// A token of libpcap's scanner, as far as names are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token<'a> {
    /// `ID`: an identifier, without the `\` of an escaped one.
    Id(&'a [u8]),
    /// A keyword (`host`, `and`, `tcp`, ...).
    Keyword(Keyword),
    /// `NUM`, `HID`, `HID6`, `EID`, `AID` (also the malformed ones the
    /// scanner reports as errors): no name.
    Literal,
    /// An operator or parenthesis (`&&`, `||` are keywords; the other
    /// two-character operators are `Punct(b'=')`).
    Punct(u8),
    /// A character the scanner rejects.
    Error,
}

/// Keywords, by what they do to the qualifier of the next identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Keyword(&'static str);

enum Class {
    /// `pname`: a protocol qualifier; `link` for the link-layer ones.
    Protocol { link: bool },
    /// `dqual`: `src`, `dst`, `addr1`, ...: the address type defaults to host.
    Direction,
    /// `aqual`, `proto`, `protochain`, `gateway`: the address type.
    Address(Position),
    /// `and`, `or`, `not`: an identifier after them inherits the qualifier.
    Logic,
    /// Anything else ends what an identifier could inherit.
    Other,
}

impl Keyword {
    fn class(self) -> Class {
        match self.0 {
            "link" | "ether" | "ppp" | "slip" | "fddi" | "tr" | "wlan" => {
                Class::Protocol { link: true }
            }
            "arp" | "rarp" | "ip" | "sctp" | "tcp" | "udp" | "icmp" | "igmp" | "igrp" | "pim"
            | "vrrp" | "carp" | "radio" | "ip6" | "icmp6" | "ah" | "esp" | "atalk" | "aarp"
            | "decnet" | "lat" | "sca" | "moprc" | "mopdl" | "iso" | "esis" | "es-is" | "isis"
            | "is-is" | "l1" | "l2" | "iih" | "lsp" | "snp" | "csnp" | "psnp" | "clnp" | "stp"
            | "ipx" | "netbeui" => Class::Protocol { link: false },
            "src" | "dst" | "address1" | "addr1" | "address2" | "addr2" | "address3" | "addr3"
            | "address4" | "addr4" | "ra" | "ta" => Class::Direction,
            "host" | "gateway" => Class::Address(Position::Host),
            "net" => Class::Address(Position::Net),
            "port" | "portrange" => Class::Address(Position::Port),
            "proto" | "protochain" => Class::Address(Position::Protocol),
            "and" | "&&" | "or" | "||" | "not" => Class::Logic,
            _ => Class::Other,
        }
    }

    /// Whether this keyword can follow a protocol qualifier in a head.
    fn continues_head(self) -> bool {
        matches!(self.class(), Class::Direction | Class::Address(_))
    }

    /// Whether an identifier right after this keyword is looked up in one
    /// of libpcap's own tables (802.11 types, LLC types, pflog fields).
    fn takes_table_name(self) -> bool {
        matches!(
            self.0,
            "type"
                | "subtype"
                | "direction"
                | "dir"
                | "llc"
                | "on"
                | "ifname"
                | "rset"
                | "ruleset"
                | "reason"
                | "action"
        )
    }
}

/// The keywords of `scanner.l`, which win over an identifier of the same length.
const KEYWORDS: &[&str] = &[
    "dst",
    "src",
    "link",
    "ether",
    "ppp",
    "slip",
    "fddi",
    "tr",
    "wlan",
    "arp",
    "rarp",
    "ip",
    "sctp",
    "tcp",
    "udp",
    "icmp",
    "igmp",
    "igrp",
    "pim",
    "vrrp",
    "carp",
    "radio",
    "ip6",
    "icmp6",
    "ah",
    "esp",
    "atalk",
    "aarp",
    "decnet",
    "lat",
    "sca",
    "moprc",
    "mopdl",
    "iso",
    "esis",
    "es-is",
    "isis",
    "is-is",
    "l1",
    "l2",
    "iih",
    "lsp",
    "snp",
    "csnp",
    "psnp",
    "clnp",
    "stp",
    "ipx",
    "netbeui",
    "host",
    "net",
    "mask",
    "port",
    "portrange",
    "proto",
    "protochain",
    "gateway",
    "type",
    "subtype",
    "direction",
    "dir",
    "address1",
    "addr1",
    "address2",
    "addr2",
    "address3",
    "addr3",
    "address4",
    "addr4",
    "ra",
    "ta",
    "less",
    "greater",
    "byte",
    "broadcast",
    "multicast",
    "and",
    "or",
    "not",
    "len",
    "length",
    "inbound",
    "outbound",
    "ifindex",
    "vlan",
    "mpls",
    "pppoed",
    "pppoes",
    "geneve",
    "lane",
    "llc",
    "metac",
    "bcc",
    "oam",
    "oamf4",
    "oamf4ec",
    "oamf4sc",
    "sc",
    "ilmic",
    "vpi",
    "vci",
    "connectmsg",
    "metaconnect",
    "on",
    "ifname",
    "rset",
    "ruleset",
    "rnr",
    "rulenum",
    "srnr",
    "subrulenum",
    "reason",
    "action",
    "fisu",
    "lssu",
    "lsu",
    "msu",
    "hfisu",
    "hlssu",
    "hmsu",
    "sio",
    "opc",
    "dpc",
    "sls",
    "hsio",
    "hopc",
    "hdpc",
    "hsls",
];

/// Names `scanner.l` turns into numbers (`NUM`).
const NUMBER_NAMES: &[&str] = &[
    "icmptype",
    "icmpcode",
    "icmp-echoreply",
    "icmp-unreach",
    "icmp-sourcequench",
    "icmp-redirect",
    "icmp-echo",
    "icmp-routeradvert",
    "icmp-routersolicit",
    "icmp-timxceed",
    "icmp-paramprob",
    "icmp-tstamp",
    "icmp-tstampreply",
    "icmp-ireq",
    "icmp-ireqreply",
    "icmp-maskreq",
    "icmp-maskreply",
    "icmp6type",
    "icmp6code",
    "icmp6-destinationunreach",
    "icmp6-packettoobig",
    "icmp6-timeexceeded",
    "icmp6-parameterproblem",
    "icmp6-echo",
    "icmp6-echoreply",
    "icmp6-multicastlistenerquery",
    "icmp6-multicastlistenerreportv1",
    "icmp6-multicastlistenerdone",
    "icmp6-routersolicit",
    "icmp6-routeradvert",
    "icmp6-neighborsolicit",
    "icmp6-neighboradvert",
    "icmp6-redirect",
    "icmp6-routerrenum",
    "icmp6-nodeinformationquery",
    "icmp6-nodeinformationresponse",
    "icmp6-ineighbordiscoverysolicit",
    "icmp6-ineighbordiscoveryadvert",
    "icmp6-multicastlistenerreportv2",
    "icmp6-homeagentdiscoveryrequest",
    "icmp6-homeagentdiscoveryreply",
    "icmp6-mobileprefixsolicit",
    "icmp6-mobileprefixadvert",
    "icmp6-certpathsolicit",
    "icmp6-certpathadvert",
    "icmp6-multicastrouteradvert",
    "icmp6-multicastroutersolicit",
    "icmp6-multicastrouterterm",
    "tcpflags",
    "tcp-fin",
    "tcp-syn",
    "tcp-rst",
    "tcp-push",
    "tcp-ack",
    "tcp-urg",
    "tcp-ece",
    "tcp-cwr",
];

/// Splits `text` as `scanner.l` does: at each point the longest match of
/// any rule, and of rules matching the same length the first.
fn tokens(text: &[u8]) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let (len, token) = next_token(rest);
        if let Some(token) = token {
            tokens.push(token);
        }
        at += len.max(1);
    }
    tokens
}

/// The next token at the start of `rest` (not empty) and its length;
/// `None` for white space.
fn next_token(rest: &[u8]) -> (usize, Option<Token<'_>>) {
    let first = rest[0];
    match first {
        b' ' | b'\r' | b'\n' | b'\t' => return (1, None),
        b'\\' => {
            // "\\"[^ !()\n\t]+ : an escaped identifier.
            let len = rest[1..]
                .iter()
                .take_while(|b| !matches!(b, b' ' | b'!' | b'(' | b')' | b'\n' | b'\t'))
                .count();
            return if len == 0 {
                (1, Some(Token::Error))
            } else {
                (len + 1, Some(Token::Id(&rest[1..=len])))
            };
        }
        b'$' => {
            // \$B : an ARCnet address.
            let len = hex_run(&rest[1..]).min(2);
            return if len == 0 {
                (1, Some(Token::Error))
            } else {
                (len + 1, Some(Token::Literal))
            };
        }
        _ => {}
    }
    let two = rest.get(..2);
    match two {
        Some(b"&&") => return (2, Some(Token::Keyword(Keyword("&&")))),
        Some(b"||") => return (2, Some(Token::Keyword(Keyword("||")))),
        Some(b">=" | b"<=" | b"!=" | b"==" | b"<<" | b">>") => {
            return (2, Some(Token::Punct(b'=')));
        }
        _ => {}
    }
    // Rules that contain ':' can be longer than any identifier here.
    let colon = colon_literal_len(rest);
    if first == b':' {
        return match colon {
            Some(len) => (len, Some(Token::Literal)),
            None => (1, Some(Token::Punct(b':'))),
        };
    }
    if b"+-*/%[]!<>()&|^=".contains(&first) {
        return (1, Some(Token::Punct(first)));
    }
    if !first.is_ascii_alphanumeric() {
        return (1, Some(Token::Error));
    }
    // [A-Za-z0-9]([-_.A-Za-z0-9]*[.A-Za-z0-9])?
    let run = rest
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        .count();
    let id_len = rest[..run]
        .iter()
        .rposition(|b| b.is_ascii_alphanumeric() || *b == b'.')
        .map_or(1, |p| p + 1);
    // Every other rule that can match here comes before the identifier
    // rule, so it wins at the same length.
    let literal = [
        colon,
        longest(rest, id_len, is_mac),
        number_len(rest),
        longest(rest, id_len, is_dotted_host),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some(len) = literal.filter(|&len| len > id_len) {
        return (len, Some(Token::Literal));
    }
    // At the same length, keywords come first, then the literals, then the
    // names of numbers; the identifier rule is last.
    let word = &rest[..id_len];
    if let Some(keyword) = KEYWORDS.iter().find(|k| k.as_bytes() == word) {
        return (id_len, Some(Token::Keyword(Keyword(keyword))));
    }
    if literal == Some(id_len) || NUMBER_NAMES.iter().any(|k| k.as_bytes() == word) {
        return (id_len, Some(Token::Literal));
    }
    (id_len, Some(Token::Id(word)))
}

/// The number of hex digits at the start of `bytes`.
fn hex_run(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_hexdigit()).count()
}

/// The longest prefix of `rest`, at most `max` bytes, that `matches`.
fn longest(rest: &[u8], max: usize, matches: fn(&[u8]) -> bool) -> Option<usize> {
    (1..=max.min(rest.len()))
        .rev()
        .find(|&len| matches(&rest[..len]))
}

/// `{N}`: `[0-9]+` or `0x` and hex digits; the longest match.
fn number_len(rest: &[u8]) -> Option<usize> {
    let decimal = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let hex = match rest {
        [b'0', b'x' | b'X', tail @ ..] if hex_run(tail) > 0 => 2 + hex_run(tail),
        _ => 0,
    };
    Some(decimal.max(hex)).filter(|&len| len > 0)
}

/// Whether all of `text` is one `{N}`.
fn is_number(text: &[u8]) -> bool {
    number_len(text) == Some(text.len())
}

/// `HID`: two to four `{N}` joined by dots.
fn is_dotted_host(text: &[u8]) -> bool {
    let parts = text.split(|&b| b == b'.').count();
    (2..=4).contains(&parts) && text.split(|&b| b == b'.').all(is_number)
}

/// `{W}`: one to four hex digits.
fn is_group(text: &[u8]) -> bool {
    (1..=4).contains(&text.len()) && text.iter().all(u8::is_ascii_hexdigit)
}

/// `{B}`: one or two hex digits.
fn is_byte(text: &[u8]) -> bool {
    (1..=2).contains(&text.len()) && text.iter().all(u8::is_ascii_hexdigit)
}

/// `MAC`: six `{B}` joined by `:`, `-` or `.`, three `{B2}` joined by `.`,
/// or twelve hex digits.
fn is_mac(text: &[u8]) -> bool {
    let six = |separator: u8| {
        text.split(|&b| b == separator).count() == 6 && text.split(|&b| b == separator).all(is_byte)
    };
    six(b':')
        || six(b'-')
        || six(b'.')
        || (text.split(|&b| b == b'.').count() == 3
            && text
                .split(|&b| b == b'.')
                .all(|p| p.len() == 4 && p.iter().all(u8::is_ascii_hexdigit)))
        || (text.len() == 12 && text.iter().all(u8::is_ascii_hexdigit))
}

/// `V6`: an IPv6 address as `scanner.l` spells its forms out: eight
/// groups, or `::` with at most seven, optionally ending in a dotted quad
/// (then six groups, or `::` with at most five).
fn is_ipv6(text: &[u8]) -> bool {
    let (groups, compressed) = match text.windows(2).position(|w| w == b"::") {
        Some(at) => {
            let (head, tail) = (&text[..at], &text[at + 2..]);
            if tail.windows(2).any(|w| w == b"::") {
                return false;
            }
            let mut groups: Vec<&[u8]> = Vec::new();
            if !head.is_empty() {
                groups.extend(head.split(|&b| b == b':'));
            }
            if !tail.is_empty() {
                groups.extend(tail.split(|&b| b == b':'));
            }
            (groups, true)
        }
        None => (text.split(|&b| b == b':').collect(), false),
    };
    let quad = groups.last().is_some_and(|last| last.contains(&b'.'));
    if quad {
        let last = groups[groups.len() - 1];
        if last.split(|&b| b == b'.').count() != 4 || !last.split(|&b| b == b'.').all(is_number) {
            return false;
        }
    }
    let words = &groups[..groups.len() - usize::from(quad)];
    if !words.iter().all(|g| is_group(g)) {
        return false;
    }
    match (compressed, quad) {
        (true, false) => words.len() <= 7,
        (true, true) => words.len() <= 5,
        (false, false) => words.len() == 8,
        (false, true) => words.len() == 6,
    }
}

/// `{B}:+({B}:+)+`: what looks like a colon-separated MAC but is not one
/// (the scanner reports it as a bad Ethernet address).
fn is_bad_mac(text: &[u8]) -> bool {
    if text.last() != Some(&b':') {
        return false;
    }
    let bytes: Vec<&[u8]> = text
        .split(|&b| b == b':')
        .filter(|part| !part.is_empty())
        .collect();
    bytes.len() >= 2 && bytes.iter().all(|b| is_byte(b)) && !text.starts_with(b":")
}

/// The longest match at the start of `rest` of a rule that contains `:`
/// (`MAC`, `V6`, the bad-MAC rule), if any.
fn colon_literal_len(rest: &[u8]) -> Option<usize> {
    // Each of them has a ':' within its first five bytes, after hex digits only.
    let lead = hex_run(rest);
    if lead > 4 || rest.get(lead) != Some(&b':') {
        return None;
    }
    let span = rest
        .iter()
        .take_while(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'x' | b'X'))
        .count();
    (1..=span)
        .rev()
        .find(|&len| is_mac(&rest[..len]) || is_ipv6(&rest[..len]) || is_bad_mac(&rest[..len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(expression: &str) -> Option<(String, NameKind)> {
        find_name(expression).map(|n| (n.text, n.kind))
    }

    #[expect(
        clippy::unnecessary_wraps,
        reason = "compared with what `name` returns"
    )]
    fn host(text: &str) -> Option<(String, NameKind)> {
        Some((text.to_owned(), NameKind::Host))
    }

    #[test]
    fn scans_like_libpcap() {
        let kinds = |text: &str| {
            tokens(text.as_bytes())
                .into_iter()
                .map(|t| match t {
                    Token::Id(id) => format!("ID:{}", String::from_utf8_lossy(id)),
                    Token::Keyword(k) => k.0.to_owned(),
                    Token::Literal => "LIT".to_owned(),
                    Token::Punct(p) => (p as char).to_string(),
                    Token::Error => "ERR".to_owned(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (text, expected) in [
            ("host a.b and port 80", "host ID:a.b and port LIT"),
            ("hostx host", "ID:hostx host"),
            ("1.2.3.4 1.2.3.4.5 10.1", "LIT ID:1.2.3.4.5 LIT"),
            ("0x1f 12ab 0xzz", "LIT ID:12ab ID:0xzz"),
            ("fe80::1 ::1 ::ffff:1.2.3.4 ::", "LIT LIT LIT LIT"),
            ("1:2:3:4:5:6:7:8 abc:", "LIT ID:abc :"),
            (
                "00:11:22:33:44:55 00-11-22-33-44-55 0011.2233.4455 001122334455",
                "LIT LIT LIT LIT",
            ),
            ("1:2:", "LIT"),
            ("tcp-syn icmp-echo es-is", "LIT LIT es-is"),
            ("a- b_ c-d", "ID:a - ID:b ERR ID:c-d"),
            ("\\tcp \\ x", "ID:tcp ERR ID:x"),
            (
                "ip[2:2]>=1&&!(x||y)",
                "ip [ LIT : LIT ] = LIT && ! ( ID:x || ID:y )",
            ),
            ("$1a é", "LIT ERR ERR"),
        ] {
            assert_eq!(kinds(text), expected, "{text}");
        }
    }

    #[test]
    fn finds_names_where_libpcap_resolves_them() {
        assert_eq!(name("host some.name"), host("some.name"));
        assert_eq!(name("src example.com"), host("example.com"));
        assert_eq!(name("ip dst or src x"), host("x"));
        assert_eq!(name("tcp and host 1.2.3.4 or h2"), host("h2"));
        assert_eq!(name("host 10.0.0.1 or (10.0.0.2 or nope)"), host("nope"));
        assert_eq!(name("not host \\x"), host("x"));
        assert_eq!(name("host 1.2.3.4.5"), host("1.2.3.4.5"));
        assert_eq!(name("gateway gw"), host("gw"));
        assert_eq!(name("port http and src https"), host("https"));
        assert_eq!(name("port 80 or tcp or http"), host("http"));
        assert_eq!(name("(port 80) or http"), host("http"));
        assert_eq!(
            name("ether host box"),
            Some(("box".to_owned(), NameKind::EtherHost))
        );
        assert_eq!(
            name("ether src or dst box"),
            Some(("box".to_owned(), NameKind::EtherHost))
        );
        assert_eq!(name("net corp"), Some(("corp".to_owned(), NameKind::Net)));
        assert_eq!(name("foo"), host("foo"));
        assert_eq!(name("ip[0] = 1 or foo"), host("foo"));
    }

    #[test]
    fn keeps_addresses_ports_protocols_and_keywords() {
        for expression in [
            "",
            "tcp port 80",
            "host 10.0.0.1 and not port 22",
            "port http or https or 8080",
            "tcp src or dst port domain",
            "port (http or https)",
            "port http and (host 1.2.3.4) or https",
            "port http and not https",
            "portrange 1-100 or portrange http-https",
            "ip proto \\tcp or ether proto \\arp",
            "ip6 protochain \\udp",
            "host fe80::1 or net 2001:db8::/32 or net 10.0.0.0 mask 255.0.0.0",
            "ether host 00:11:22:33:44:55",
            "host \\1.2.3.4 or \\::1",
            "tcp[tcpflags] & (tcp-syn|tcp-ack) != 0",
            "icmp[icmptype] = icmp-echo",
            "wlan type mgt subtype beacon",
            "llc rnr or llc u",
            "vlan 100 and ip",
            "ip broadcast or less 64",
        ] {
            assert_eq!(name(expression), None, "{expression}");
        }
    }

    #[test]
    fn the_differential_corpus_has_no_names() {
        let corpus = include_str!("../tests/expressions.txt");
        for line in corpus.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            assert_eq!(name(line), None, "{line}");
        }
    }

    #[test]
    fn messages_ask_for_addresses() {
        assert_eq!(
            find_name("host some.name").unwrap().to_string(),
            "host names are not resolved: use an IP address instead of \"some.name\""
        );
        assert!(
            find_name("ether host x")
                .unwrap()
                .to_string()
                .contains("use a MAC address")
        );
        assert!(
            find_name("net x")
                .unwrap()
                .to_string()
                .contains("10.0.0.0/8")
        );
    }
}
