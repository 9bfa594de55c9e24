//! Rotated files, read back by tshark and capinfos.

use std::path::Path;

use pcap_format::linktype::LINKTYPE_RAW;
use pcap_format::pcapng::{PcapNgWriter, SectionOptions};

use super::*;

use crate::tests::wireshark::{self, ScratchFile, capinfos_value, tshark_rows};

/// 2023-11-14T22:13:20Z, in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;

/// A scratch directory, removed with what it holds.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = ScratchFile::new(name).0.clone();
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// The names in it, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn flags(size: Option<u64>, seconds: Option<u64>, count: Option<u32>) -> RotationFlags {
    RotationFlags {
        file_size: size,
        rotate_seconds: seconds,
        file_count: count,
        post_rotate: None,
    }
}

fn pcapng_maker() -> MakeWriter {
    Box::new(|file| {
        Ok(Box::new(PcapNgWriter::new(
            file,
            &SectionOptions::default(),
        )?))
    })
}

fn writer(path: &Path, flags: &RotationFlags) -> RotatingWriter {
    let policy = Policy::new(path, flags).unwrap().expect("rotation asked");
    let mut writer = RotatingWriter::new(policy, pcapng_maker()).unwrap();
    writer
        .add_interface(&Interface {
            name: "eth0".into(),
            description: None,
            link_type: LINKTYPE_RAW,
            snaplen: 0,
        })
        .unwrap();
    writer
}

/// Packet `n`: 1000 bytes starting with `n`, at `timestamp_ns`.
fn packet(writer: &mut RotatingWriter, n: u32, timestamp_ns: u64) {
    let mut data = vec![0; 1000];
    data[..4].copy_from_slice(&n.to_be_bytes());
    writer
        .write_packet(&Packet {
            interface_id: 0,
            timestamp_ns,
            original_len: 1000,
            data: &data,
            direction: None,
            comment: None,
        })
        .unwrap();
}

/// The packet numbers in `file`, as tshark reads them.
fn numbers(file: &Path) -> Vec<u32> {
    for len in tshark_rows(file, &["frame.len"]) {
        assert_eq!(len, "1000");
    }
    let bytes = std::fs::read(file).unwrap();
    // The numbers, from the raw blocks: every data starts after a 28-byte
    // EPB header; find them by tshark's count and the data's layout.
    let count: usize = capinfos_value(file, "Number of packets").parse().unwrap();
    let mut found = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let kind = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if kind == 6 {
            found.push(u32::from_be_bytes(
                bytes[at + 28..at + 32].try_into().unwrap(),
            ));
        }
        at += len;
    }
    assert_eq!(found.len(), count);
    found
}

#[test]
fn names_are_tcpdumps() {
    assert_eq!(
        [1, 2, 10, 11, 100, 101].map(count_width),
        [0, 1, 1, 2, 2, 3]
    );
    let names = |numbered, width, strftime: Option<&str>| Names {
        path: PathBuf::from("cap"),
        strftime: strftime.map(str::to_owned),
        numbered,
        width,
    };
    assert_eq!(names(true, 0, None).name(0, 0), Path::new("cap"));
    assert_eq!(names(true, 0, None).name(0, 1), Path::new("cap1"));
    assert_eq!(names(true, 1, None).name(0, 0), Path::new("cap0"));
    assert_eq!(names(true, 2, None).name(0, 7), Path::new("cap07"));
    assert_eq!(names(false, 0, None).name(T0, 3), Path::new("cap"));
    let timed = names(false, 0, Some("cap-%Y%m%d-%H%M%S.pcapng"));
    assert_eq!(timed.name(T0, 0), Path::new("cap-20231114-221320.pcapng"));
    assert_eq!(
        names(true, 0, Some("c-%H%M")).name(T0, 2),
        Path::new("c-22132")
    );
    assert!(matches!(
        check_strftime("cap-%Q"),
        Err(RotateError::BadConversion(_, bad)) if bad == "%Q"
    ));
    check_strftime("cap-%Y-%m-%dT%H:%M:%S%%").unwrap();
}

#[test]
fn size_rotation_bounds_every_file_and_keeps_every_packet() {
    let dir = Dir::new("rotate-size");
    let mut w = writer(&dir.0.join("cap"), &flags(Some(1), None, None));
    for n in 0..2500 {
        packet(&mut w, n, T0 + u64::from(n));
    }
    w.close().unwrap();
    assert_eq!(dir.names(), ["cap", "cap1", "cap2"]);
    let mut all = Vec::new();
    for (i, name) in dir.names().iter().enumerate() {
        let file = dir.0.join(name);
        let size = std::fs::metadata(&file).unwrap().len();
        // At most one packet block (1032 bytes) and a statistics block
        // past the limit; the first two were closed only past it.
        assert!(size <= 1_000_000 + 1032 + 200, "{name}: {size}");
        if i < 2 {
            assert!(size > 1_000_000, "{name}: {size}");
        }
        all.extend(numbers(&file));
    }
    assert_eq!(all, (0..2500).collect::<Vec<_>>());
}

#[test]
fn ring_keeps_the_newest_files_under_padded_numbers() {
    let dir = Dir::new("rotate-ring");
    let mut w = writer(&dir.0.join("cap"), &flags(Some(1), None, Some(3)));
    // 5 files' worth: cap0..cap2, then cap0 and cap1 again.
    for n in 0..4500 {
        packet(&mut w, n, T0 + u64::from(n));
    }
    w.close().unwrap();
    assert_eq!(dir.names(), ["cap0", "cap1", "cap2"]);
    let first = |name: &str| numbers(&dir.0.join(name))[0];
    // cap2 is the oldest kept, then cap0 and cap1 (the newest).
    assert!(first("cap2") < first("cap0") && first("cap0") < first("cap1"));
    assert_eq!(*numbers(&dir.0.join("cap1")).last().unwrap(), 4499);
}

#[test]
fn time_rotation_follows_the_wall_clock_and_the_ring_removes_old_names() {
    let dir = Dir::new("rotate-time");
    let template = dir.0.join("cap-%H%M%S.pcapng");
    let mut w = writer(&template, &flags(None, Some(10), Some(2)));
    // The first file is the current interval's.
    let start_file = w.files().next().unwrap().to_owned();
    // From the next interval on, one packet every 2.5 s over three
    // intervals.
    let period = 10 * NANOS_PER_SECOND;
    let base = (now_ns() / period + 1) * period;
    for n in 0..12 {
        packet(&mut w, n, base + u64::from(n) * 2_500_000_000);
    }
    w.close().unwrap();
    assert!(!start_file.exists(), "the ring removed the oldest file");
    let name = |ns: u64| {
        let time = DateTime::<Utc>::from_timestamp((ns / NANOS_PER_SECOND) as i64, 0).unwrap();
        time.format("cap-%H%M%S.pcapng").to_string()
    };
    let (second, third) = (name(base + period), name(base + 2 * period));
    assert_eq!(dir.names(), [second.clone(), third.clone()]);
    assert_eq!(numbers(&dir.0.join(&second)), [4, 5, 6, 7]);
    assert_eq!(numbers(&dir.0.join(&third)), [8, 9, 10, 11]);
    // Each closed file counts its own packets.
    let delivered = wireshark::tshark_block_fields(
        &dir.0.join(&second),
        &["pcapng.options.option.data.interface.delivered_to_user"],
    );
    assert_eq!(delivered, ["4"]);
}

#[test]
fn post_rotate_command_runs_on_every_file_including_the_last() {
    let dir = Dir::new("rotate-z");
    let log = dir.0.join("z.log");
    let script = dir.0.join("z.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$1\" >> {}\n", log.display()),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();
    let mut rotation = flags(Some(1), None, None);
    rotation.post_rotate = Some(script);
    let mut w = writer(&dir.0.join("cap"), &rotation);
    for n in 0..2500 {
        packet(&mut w, n, T0 + u64::from(n));
    }
    w.close().unwrap();
    let mut ran: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    ran.sort();
    let expected: Vec<String> = ["cap", "cap1", "cap2"]
        .iter()
        .map(|n| dir.0.join(n).display().to_string())
        .collect();
    assert_eq!(ran, expected);

    let missing = RotationFlags {
        post_rotate: Some("no-such-program-anywhere".into()),
        ..RotationFlags::default()
    };
    assert!(matches!(
        Policy::new(Path::new("cap"), &missing),
        Err(RotateError::NoCommand(..))
    ));
}

#[test]
fn old_packets_are_split_by_their_own_times() {
    // As `-r` reads them: the first file, opened now, takes the first
    // packet's interval instead.
    let dir = Dir::new("rotate-old");
    let mut w = writer(&dir.0.join("cap-%H%M%S"), &flags(None, Some(10), None));
    for n in 0..12 {
        packet(&mut w, n, T0 + u64::from(n) * 2_500_000_000);
    }
    w.close().unwrap();
    assert_eq!(dir.names(), ["cap-221320", "cap-221330", "cap-221340"]);
    assert_eq!(numbers(&dir.0.join("cap-221320")), [0, 1, 2, 3]);
    assert_eq!(numbers(&dir.0.join("cap-221340")), [8, 9, 10, 11]);
}
