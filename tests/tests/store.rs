//! Stored captures (`pcap capture --store`) against a real S3-compatible
//! server (s3s-fs, which checks signatures and presigned URLs' expiry), with
//! agents in "VM" namespaces and the API and the server in the control
//! namespace.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{
    io::Read as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use nix::sys::signal::Signal;
use pcap_tests::{
    TempDir,
    captures::{self, Capture},
    cluster::{ALICE_TOKEN, API_ADDRESS, BOB_TOKEN, Cluster},
    cluster_setup::{self, ping_every_vm},
    now_ns,
    process::{Running, run_ok, wait_until},
    reference::assert_readable,
    s3::{self, S3Server},
};

/// What the CLI prints (not on a terminal) once an origin has attached.
const STARTED: &str = "capturing on";
/// Where the S3 server listens, inside the control namespace.
const S3_PORT: u16 = 9000;
/// An admin, who sees every user's captures.
const CAROL_TOKEN: &str = "carol-admin-token-5555";
/// Only ICMP and UDP: no ARP or other chatter that one capture could see
/// and another not.
const FILTER: &str = "icmp or udp";

/// A cluster with agents, the S3 server, and the API storing to it with
/// `store_extra` in its `[store]` table.
fn store_cluster(dir: &Path, vms: usize, store_extra: &str) -> anyhow::Result<(Cluster, S3Server)> {
    let mut cluster = cluster_setup::with_agents(dir, vms, "")?;
    let s3 = S3Server::start(&cluster.control, dir, S3_PORT)?;
    let extra = format!(
        "[[users]]\nname = \"carol\"\ntoken = \"{CAROL_TOKEN}\"\nadmin = true\n\n{}",
        s3.api_config(store_extra)
    );
    let api_config = cluster.api_config(None, &extra)?;
    cluster.start_api(&api_config)?;
    Ok((cluster, s3))
}

/// `pcap capture --store ...` with stdout (the URL) piped, once every
/// origin attached.
fn start_stored(cluster: &Cluster, token: &str, args: &[&str]) -> anyhow::Result<Running> {
    let mut command = cluster.cli(token, &["--store"]);
    command.args(args).stdout(Stdio::piped());
    let mut cli = Running::spawn(&mut command)?;
    cli.wait_for(STARTED, cluster.vms.len())?;
    Ok(cli)
}

/// What a stored capture's CLI said at the end.
#[derive(Debug)]
struct StoredOutput {
    id: String,
    url: String,
}

/// A one-VM [`store_cluster`] (with `store_extra`), and alice's stored
/// capture ([`FILTER`]) of three pings to the VM.
fn one_stored_capture(
    dir: &Path,
    store_extra: &str,
) -> anyhow::Result<(Cluster, S3Server, StoredOutput)> {
    let (cluster, s3) = store_cluster(dir, 1, store_extra)?;
    let cli = start_stored(&cluster, ALICE_TOKEN, &[FILTER])?;
    ping_every_vm(&cluster, 3)?;
    let stored = finish_stored(cli)?;
    Ok((cluster, s3, stored))
}

/// SIGINT, and the id and URL it printed.
fn finish_stored(mut cli: Running) -> anyhow::Result<StoredOutput> {
    let mut stdout = cli.take_stdout().context("piped stdout")?;
    let (status, lines) = cli.interrupt()?;
    let mut url = String::new();
    stdout.read_to_string(&mut url)?;
    ensure!(status.success(), "pcap --store failed: {lines:#?}");
    let id = lines
        .iter()
        .find_map(|l| l.strip_prefix("pcap: stored capture ")?.split(' ').next())
        .with_context(|| format!("no stored capture id in {lines:#?}"))?
        .to_owned();
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("download link, valid until")),
        "no link expiry in {lines:#?}"
    );
    Ok(StoredOutput {
        id,
        url: url.trim().to_owned(),
    })
}

/// `pcap captures ARGS` as `token`, in the control namespace.
fn captures_command(cluster: &Cluster, token: &str, args: &[&str]) -> Command {
    let program = cluster.bin_dir.join("pcap");
    let mut command = cluster.control.command(program.to_str().expect("utf-8"));
    command
        .arg("captures")
        .args(args)
        .args(["--api", &format!("https://{API_ADDRESS}")])
        .arg("--ca")
        .arg(&cluster.pki.ca.certificate)
        .env("PCAP_TOKEN", token);
    command
}

/// `pcap captures download ID -w FILE` as `token`; its output.
fn download(
    cluster: &Cluster,
    token: &str,
    id: &str,
    file: &Path,
) -> anyhow::Result<std::process::Output> {
    let file = file.to_str().expect("utf-8");
    Ok(captures_command(cluster, token, &["download", id, "-w", file]).output()?)
}

/// The store holds no object and no unfinished upload.
fn assert_store_empty(s3: &S3Server) -> anyhow::Result<()> {
    let (uploads, objects) = (s3.unfinished_uploads()?, s3.objects()?);
    ensure!(uploads.is_empty(), "uploads left: {uploads:?}");
    ensure!(objects.is_empty(), "objects left: {objects:?}");
    Ok(())
}

/// `pcap captures list` as `token`: its stdout lines after the header.
fn list(cluster: &Cluster, token: &str) -> anyhow::Result<Vec<String>> {
    let output = run_ok(
        &mut captures_command(cluster, token, &["list"]),
        "pcap captures list",
    )?;
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .skip(1)
        .map(str::to_owned)
        .collect())
}

/// Sends a marker datagram to every VM and waits until the streamed file
/// holds all of them: every packet before them has reached the API.
fn sync_stream(cluster: &Cluster, file: &Path) -> anyhow::Result<()> {
    let mut markers = Vec::new();
    for vm in &cluster.vms {
        let marker = format!("mk{:012x}", now_ns() & 0xffff_ffff_ffff);
        vm.peer.sh(&format!(
            "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"{marker}\", (\"{}\", 9))'",
            vm.data_address()
        ))?;
        markers.push(marker);
    }
    wait_until(
        "the streamed capture holds every marker",
        Duration::from_secs(10),
        || {
            let bytes = std::fs::read(file).unwrap_or_default();
            Ok(markers
                .iter()
                .all(|m| bytes.windows(m.len()).any(|w| w == m.as_bytes())))
        },
    )
}

/// Every packet's interface, direction and bytes, in order. Timestamps
/// are compared apart: each capture has its own kernel program, which
/// stamps the packet itself, a few microseconds from the other's stamp.
fn comparable(capture: &Capture) -> Vec<String> {
    capture
        .packets
        .iter()
        .map(|p| {
            format!(
                "{:?} {:?} {} {:02x?}",
                p.interface, p.direction, p.orig_len, p.data
            )
        })
        .collect()
}

/// The stored file holds what the streamed one holds: the same packets in
/// the same order, interfaces and link types, and packets per interface.
fn assert_same_capture(stored: &Path, streamed: &Path) -> anyhow::Result<()> {
    // The same packets, interfaces and link types as the streamed file;
    // only the statistics blocks' times (and kernel counts, each capture
    // having its own program) may differ.
    assert_readable(stored)?;
    let ours = captures::read_file(stored)?;
    let reference = captures::read_file(streamed)?;
    ensure!(
        !reference.packets.is_empty(),
        "the streamed capture is empty"
    );
    let sorted = |c: &Capture| {
        let mut types = c.link_types.clone();
        types.sort_unstable();
        types
    };
    ensure!(sorted(&ours) == sorted(&reference), "link types differ");
    let (a, b) = (comparable(&ours), comparable(&reference));
    if let Some(at) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        anyhow::bail!(
            "stored and streamed packets differ at #{at} ({} vs {} packets): {:?} vs {:?}",
            a.len(),
            b.len(),
            a.get(at),
            b.get(at)
        );
    }
    // Each capture's own program stamps the packet on the same hook, one
    // after the other: microseconds apart, unless the host deschedules this
    // VM's vCPU in between (seen: 2.7 ms under load).
    for (mine, theirs) in ours.packets.iter().zip(&reference.packets) {
        ensure!(
            mine.unix_ns.abs_diff(theirs.unix_ns) < 10_000_000,
            "timestamps {} and {} are more than 10 ms apart",
            mine.unix_ns,
            theirs.unix_ns
        );
    }
    // Interfaces are numbered in the order their agents answered, which
    // differs between two captures: compare them by name.
    let delivered = |c: &Capture| {
        let mut counts: Vec<_> = c
            .statistics
            .iter()
            .map(|s| (s.interface.clone(), s.user_delivered))
            .collect();
        counts.sort();
        counts
    };
    ensure!(
        delivered(&ours) == delivered(&reference),
        "statistics differ: {:?} vs {:?}",
        ours.statistics,
        reference.statistics
    );
    Ok(())
}

#[test]
fn a_stored_capture_is_the_streamed_capture_and_only_its_owner_sees_it() -> anyhow::Result<()> {
    let dir = TempDir::new("store-equal")?;
    let (cluster, s3) = store_cluster(&dir, 2, "")?;
    let streamed = dir.join("streamed.pcapng");
    // Bob streams: one user runs one capture per agent at a time
    // (limits.max_captures_per_user_per_agent).
    let mut stream_cli = Running::spawn(&mut cluster.cli(
        BOB_TOKEN,
        &["-w", streamed.to_str().expect("utf-8"), FILTER],
    ))?;
    stream_cli.wait_for(STARTED, 2)?;
    let stored_cli = start_stored(&cluster, ALICE_TOKEN, &[FILTER])?;

    ping_every_vm(&cluster, 20)?;
    sync_stream(&cluster, &streamed)?;
    let stored = finish_stored(stored_cli)?;
    let (status, lines) = stream_cli.interrupt()?;
    ensure!(status.success(), "streaming pcap failed: {lines:#?}");

    // The object as the server holds it, and as the CLI downloads it.
    let keys = s3.objects()?;
    ensure!(
        keys == [format!("captures/static:alice/{}.alice.pcapng", stored.id)],
        "objects: {keys:?}"
    );
    let object = s3.object(&keys[0])?;
    let downloaded = dir.join("downloaded.pcapng");
    let output = download(&cluster, ALICE_TOKEN, &stored.id, &downloaded)?;
    ensure!(
        output.status.success(),
        "download failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        std::fs::read(&downloaded)? == object,
        "the download differs from the object"
    );
    let (code, body) = s3::http_get(&cluster.control, &stored.url, &dir.join("by-url"))?;
    ensure!(code == 200 && body == object, "the link gave HTTP {code}");
    ensure!(
        s3.unfinished_uploads()?.is_empty(),
        "an upload was left unfinished"
    );

    assert_same_capture(&downloaded, &streamed)?;

    // Owners: alice and the admin see it; bob neither sees nor gets it.
    ensure!(
        list(&cluster, ALICE_TOKEN)?
            .iter()
            .any(|l| l.starts_with(&stored.id))
    );
    ensure!(
        list(&cluster, CAROL_TOKEN)?
            .iter()
            .any(|l| l.starts_with(&stored.id))
    );
    let bobs = list(&cluster, BOB_TOKEN)?;
    ensure!(bobs.is_empty(), "bob lists {bobs:?}");
    let output = download(&cluster, BOB_TOKEN, &stored.id, &dir.join("bob"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("NOT_FOUND"),
        "bob's download: {stderr}"
    );
    ensure!(!dir.join("bob").exists());
    let output = download(&cluster, CAROL_TOKEN, &stored.id, &dir.join("carol"))?;
    ensure!(output.status.success() && std::fs::read(dir.join("carol"))? == object);
    Ok(())
}

#[test]
fn an_expired_download_url_is_refused() -> anyhow::Result<()> {
    let dir = TempDir::new("store-expiry")?;
    let (cluster, _s3, stored) = one_stored_capture(&dir, "presign_expiry = 4.0")?;
    let issued = now_ns();
    let (code, _) = s3::http_get(&cluster.control, &stored.url, &dir.join("fresh"))?;
    ensure!(code == 200, "a fresh link gave HTTP {code}");
    // Past the expiry: `X-Amz-Date` counts whole seconds, so the link holds
    // 3 to 4 s after signing, time enough for a fresh fetch on a slow
    // machine; then a margin for clock steps.
    wait_until("the link has expired", Duration::from_secs(10), || {
        Ok(now_ns() > issued + 5_500_000_000)
    })?;
    let (code, body) = s3::http_get(&cluster.control, &stored.url, &dir.join("stale"))?;
    let body = String::from_utf8_lossy(&body);
    ensure!(
        code == 403 && body.contains("Request has expired"),
        "an expired link gave HTTP {code}: {body}"
    );
    // The same link with a forged expiry fails its signature.
    let forged = stored.url.replace("X-Amz-Expires=4", "X-Amz-Expires=600");
    ensure!(forged != stored.url, "no X-Amz-Expires=4 in {}", stored.url);
    let (code, _) = s3::http_get(&cluster.control, &forged, &dir.join("forged"))?;
    ensure!(code == 403, "a forged link gave HTTP {code}");
    // A new link from the API works.
    let output = download(&cluster, ALICE_TOKEN, &stored.id, &dir.join("again"))?;
    ensure!(
        output.status.success(),
        "download failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Sends about `bytes` of UDP to every VM's data address.
fn flood(cluster: &Cluster, bytes: usize) -> anyhow::Result<()> {
    let datagrams = bytes / 1400 / cluster.vms.len() + 1;
    for vm in &cluster.vms {
        vm.peer.sh(&format!(
            "python3 -c 'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for i in range({datagrams}): s.sendto(bytes(1400), (\"{}\", 9))'",
            vm.data_address()
        ))?;
    }
    Ok(())
}

#[test]
fn a_capture_killed_midway_leaves_no_object_and_no_upload() -> anyhow::Result<()> {
    let dir = TempDir::new("store-kill")?;
    let (mut cluster, s3) = store_cluster(&dir, 2, "part_size = 5242880")?;
    // The client killed: its request stream breaks.
    let cli = start_stored(&cluster, ALICE_TOKEN, &[FILTER])?;
    wait_until("a part is uploaded", Duration::from_secs(30), || {
        flood(&cluster, 1 << 20)?;
        Ok(s3.uploaded_parts()? >= 1)
    })?;
    cli.signal(Signal::SIGKILL)?;
    let _ = cli.wait()?;
    wait_until("the upload is aborted", Duration::from_secs(15), || {
        Ok(s3.unfinished_uploads()?.is_empty())
    })?;
    ensure!(
        s3.objects()?.is_empty(),
        "objects left: {:?}",
        s3.objects()?
    );

    // Every agent killed: the capture broke on every origin.
    let cli = start_stored(&cluster, ALICE_TOKEN, &[FILTER])?;
    wait_until("a part is uploaded", Duration::from_secs(30), || {
        flood(&cluster, 1 << 20)?;
        Ok(s3.uploaded_parts()? >= 1)
    })?;
    for vm in &mut cluster.vms {
        if let Some(agent) = &vm.agent {
            agent.signal(Signal::SIGKILL)?;
        }
        vm.agent = None;
    }
    let (status, lines) = cli.wait()?;
    ensure!(!status.success(), "pcap succeeded: {lines:#?}");
    ensure!(
        lines.iter().any(|l| l.contains("nothing was stored")),
        "no word of the discarded capture: {lines:#?}"
    );
    assert_store_empty(&s3)?;
    Ok(())
}

#[test]
fn retention_removes_old_captures() -> anyhow::Result<()> {
    let dir = TempDir::new("store-retention")?;
    let (cluster, s3, stored) =
        one_stored_capture(&dir, "retention = 2.0\ncleanup_interval = 0.2")?;
    ensure!(
        list(&cluster, ALICE_TOKEN)?
            .iter()
            .any(|l| l.starts_with(&stored.id)),
        "the new capture is not listed"
    );
    wait_until(
        "retention removes the capture",
        Duration::from_secs(15),
        || Ok(s3.objects()?.is_empty()),
    )?;
    ensure!(list(&cluster, ALICE_TOKEN)?.is_empty());
    Ok(())
}

#[test]
fn a_store_that_is_down_refuses_the_capture() -> anyhow::Result<()> {
    let dir = TempDir::new("store-down")?;
    let (cluster, mut s3) = store_cluster(&dir, 1, "")?;
    s3.stop();
    let output = cluster.cli(ALICE_TOKEN, &["--store", FILTER]).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "pcap succeeded: {stderr}");
    ensure!(
        stderr.contains("UNAVAILABLE") && stderr.contains("capture store"),
        "no clear error: {stderr}"
    );
    ensure!(!stderr.contains(STARTED), "the capture started: {stderr}");
    for vm in &cluster.vms {
        ensure!(vm.ns.tcx_programs("eth0")?.is_empty(), "something attached");
    }
    // Listing says so too.
    let output = captures_command(&cluster, ALICE_TOKEN, &["list"]).output()?;
    ensure!(!output.status.success());
    ensure!(String::from_utf8_lossy(&output.stderr).contains("UNAVAILABLE"));
    Ok(())
}
