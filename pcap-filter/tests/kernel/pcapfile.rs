//! Classic pcap files: reading what tcpdump writes, writing what it reads.

/// One packet record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    pub ts_frac: u32,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// A parsed file.
#[derive(Clone, Debug)]
pub struct File {
    pub snaplen: u32,
    pub link_type: u32,
    pub records: Vec<Record>,
}

/// Parses a classic pcap file (either byte order, micro- or nanosecond).
pub fn parse(bytes: &[u8]) -> Result<File, String> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .ok_or("no pcap header")?
        .try_into()
        .expect("4 bytes");
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(format!("not a classic pcap file (magic {magic:02x?})")),
    };
    let u32_at = |at: usize| -> Result<u32, String> {
        let b: [u8; 4] = bytes
            .get(at..at + 4)
            .ok_or("truncated")?
            .try_into()
            .expect("4 bytes");
        Ok(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let snaplen = u32_at(16)?;
    let link_type = u32_at(20)? & 0x0fff_ffff;
    let mut records = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let (ts_sec, ts_frac, cap_len, orig_len) = (
            u32_at(at)?,
            u32_at(at + 4)?,
            u32_at(at + 8)?,
            u32_at(at + 12)?,
        );
        at += 16;
        let data = bytes
            .get(at..at + cap_len as usize)
            .ok_or_else(|| format!("record at {} is truncated", at - 16))?
            .to_vec();
        at += cap_len as usize;
        records.push(Record {
            ts_sec,
            ts_frac,
            orig_len,
            data,
        });
    }
    Ok(File {
        snaplen,
        link_type,
        records,
    })
}

/// A little-endian, microsecond pcap file of `link_type` with snaplen 262144.
pub fn write(link_type: u32, records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4_u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    for word in [0u32, 0, 262_144, link_type] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for r in records {
        for word in [r.ts_sec, r.ts_frac, r.data.len() as u32, r.orig_len] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&r.data);
    }
    out
}

#[test]
fn round_trips() {
    let records = vec![Record {
        ts_sec: 7,
        ts_frac: 0,
        orig_len: 3,
        data: vec![1, 2, 3],
    }];
    let file = parse(&write(1, &records)).unwrap();
    assert_eq!((file.link_type, file.records), (1, records));
}
