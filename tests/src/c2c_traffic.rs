//! Traffic between app instances over the overlay, as the c2c tests make
//! it (a greeting TCP server, clients that tell allowed from refused), and
//! tshark's fields of the captures they compare.

use std::{net::Ipv4Addr, path::Path, process::Command};

use anyhow::{Context as _, ensure};

use crate::{
    agent_capture,
    landscape::Cell,
    netns::Netns,
    process::{Running, run_ok},
};

/// A TCP server in `ns` on 8080 and 9090 that greets and closes, and a UDP
/// sink on port 9; ready once it says so.
pub fn serve(ns: &Netns) -> anyhow::Result<Running> {
    let script = r#"
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen()
    return s
def loop(s):
    while True:
        c, _ = s.accept(); c.sendall(b"hello\n"); c.close()
servers = [tcp(8080), tcp(9090)]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9))
for s in servers: threading.Thread(target=loop, args=(s,), daemon=True).start()
print("ready", file=sys.stderr, flush=True)
while True: u.recv(65536)
"#;
    let mut server = Running::spawn(ns.command("python3").args(["-c", script]))?;
    server.wait_for("ready", 1)?;
    Ok(server)
}

/// `pcap-agent capture --c2c` of `cell`'s `silk-vtep` with the cell's
/// container metadata store, writing the TCP packets to `file`; started.
pub fn local_vtep_capture(cell: &Cell, file: &Path) -> anyhow::Result<Running> {
    let store = cell.metadata_store();
    agent_capture::start(
        &cell.ns,
        &[
            "--c2c",
            "-i",
            "silk-vtep",
            "--container-metadata-store",
            store.to_str().context("utf-8 path")?,
            "-w",
            file.to_str().context("utf-8 path")?,
            "tcp",
        ],
    )
}

/// Connects from `ns` to `ip:port` with source port `sport` (0: any):
/// `Ok(true)` when the greeting arrived, `Ok(false)` when refused.
pub fn connect(ns: &Netns, ip: Ipv4Addr, port: u16, sport: u16) -> anyhow::Result<bool> {
    let out = ns.sh(&format!(
        "python3 -c '
import socket
s = socket.socket(); s.settimeout(5); s.bind((\"0.0.0.0\", {sport}))
try:
    s.connect((\"{ip}\", {port})); print(s.recv(100).decode().strip())
except ConnectionRefusedError:
    print(\"refused\")
s.close()'"
    ))?;
    match out.trim() {
        "hello" => Ok(true),
        "refused" => Ok(false),
        other => anyhow::bail!("unexpected client output {other:?}"),
    }
}

/// From `ns`, a connection to `ip:8080`, which the policy allows (greeted),
/// and one to `ip:9090`, which it denies (refused), from source ports
/// `sports` (0: any).
pub fn allowed_and_denied(ns: &Netns, ip: Ipv4Addr, sports: [u16; 2]) -> anyhow::Result<()> {
    ensure!(
        connect(ns, ip, 8080, sports[0])?,
        "the policy allows {ip}:8080"
    );
    ensure!(
        !connect(ns, ip, 9090, sports[1])?,
        "no policy for {ip}:9090"
    );
    Ok(())
}

/// `tshark ARGS` (e.g. `-T fields -e …`): its output's lines, split at tabs.
pub fn tshark(args: &[&str]) -> anyhow::Result<Vec<Vec<String>>> {
    let out = run_ok(
        Command::new("tshark").args(args),
        &format!("tshark {args:?}"),
    )?;
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect())
}

/// `tshark -r FILE ARGS -T fields -e FIELD…`: a row a packet, with one
/// value per field (empty where tshark gives none).
pub fn tshark_fields(
    file: &Path,
    args: &[&str],
    fields: &[&str],
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut all = vec!["-r", file.to_str().context("utf-8 path")?];
    all.extend(args);
    all.extend(["-T", "fields"]);
    for field in fields {
        all.extend(["-e", field]);
    }
    let mut rows = tshark(&all)?;
    for row in &mut rows {
        row.resize(fields.len(), String::new());
    }
    Ok(rows)
}
