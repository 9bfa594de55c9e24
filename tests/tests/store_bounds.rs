//! Bounds of stored captures against a real S3-compatible server (s3s-fs):
//! a capture stops at `store.max_size` with LIMIT_REACHED and the object
//! keeps what was captured until then, completed and readable.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{io::Read as _, process::Stdio};

use anyhow::{Context as _, ensure};
use pcap_tests::{
    TempDir, cluster::ALICE_TOKEN, cluster_setup, process::Running, reference::assert_readable,
    s3::S3Server,
};

/// Where the S3 server listens, inside the control namespace.
const S3_PORT: u16 = 9000;
/// S3's smallest part.
const PART_SIZE: u64 = 5 << 20;
const MAX_SIZE: u64 = 6 << 20;

#[test]
fn a_stored_capture_stops_at_max_size_and_keeps_what_it_captured() -> anyhow::Result<()> {
    let dir = TempDir::new("maxsize")?;
    let mut cluster = cluster_setup::with_agents(&dir, 1, "")?;
    let s3 = S3Server::start(&cluster.control, &dir, S3_PORT)?;
    let store = s3.api_config(&format!("part_size = {PART_SIZE}\nmax_size = {MAX_SIZE}"));
    let api_config = cluster.api_config(None, &store)?;
    cluster.start_api(&api_config)?;

    let mut command = cluster.cli(ALICE_TOKEN, &["--store", "icmp"]);
    command.stdout(Stdio::piped());
    let mut cli = Running::spawn(&mut command)?;
    cli.wait_for("capturing on", 1)?;
    // Some 50 MB of ICMP, far more than max_size.
    let vm = &cluster.vms[0];
    vm.peer.sh(&format!(
        "ping -q -f -s 1400 -c 20000 -w 60 {} || true",
        vm.data_address()
    ))?;
    // The capture ends by itself, and the object is kept.
    cli.wait_for("stored capture ", 1)?;
    let mut stdout = cli.take_stdout().context("piped stdout")?;
    let (status, lines) = cli.wait()?;
    let mut url = String::new();
    stdout.read_to_string(&mut url)?;
    ensure!(status.success(), "pcap --store failed: {lines:#?}");
    ensure!(
        lines.iter().any(|l| l.contains("limit reached")
            && l.contains(&format!(
                "maximum size of {MAX_SIZE} bytes (store.max_size)"
            ))),
        "no limit reached for store.max_size: {lines:#?}"
    );
    ensure!(url.trim().starts_with("http"), "no download URL: {url:?}");

    let objects = s3.objects()?;
    ensure!(objects.len() == 1, "objects: {objects:?}");
    let object = s3.object(&objects[0])?;
    let size = object.len() as u64;
    // Stopped at the first message past max_size: at most one 1 MiB batch
    // and the statistics more.
    ensure!(
        (MAX_SIZE..MAX_SIZE + (2 << 20)).contains(&size),
        "the object has {size} bytes; max_size is {MAX_SIZE}"
    );
    let file = dir.join("full.pcapng");
    std::fs::write(&file, &object)?;
    assert_readable(&file)?;
    ensure!(
        s3.unfinished_uploads()?.is_empty(),
        "uploads left: {:?}",
        s3.unfinished_uploads()?
    );
    Ok(())
}

#[test]
fn a_restarted_api_asks_the_store_for_the_uploads_a_killed_one_left_open() -> anyhow::Result<()> {
    let dir = TempDir::new("stale")?;
    let mut cluster = cluster_setup::with_agents(&dir, 1, "")?;
    let s3 = S3Server::start(&cluster.control, &dir, S3_PORT)?;
    let api_config = cluster.api_config(None, &s3.api_config(""))?;
    cluster.start_api(&api_config)?;

    let mut cli = Running::spawn(&mut cluster.cli(ALICE_TOKEN, &["--store", "icmp"]))?;
    cli.wait_for("capturing on", 1)?;
    let api = cluster.api.take().context("running")?;
    api.signal(nix::sys::signal::Signal::SIGKILL)?;
    api.wait()?;
    drop(cli);
    ensure!(
        !s3.unfinished_uploads()?.is_empty(),
        "the killed API left no upload open"
    );

    // s3s-fs does not implement ListMultipartUploads (s3s answers
    // NotImplemented): the restarted API asks with a request whose
    // signature s3s-fs accepted (else 403 SignatureDoesNotMatch), and says
    // that it could not sweep, naming the store's answer.
    cluster.start_api(&api_config)?;
    let api = cluster.api.as_mut().context("running")?;
    api.wait_for(
        "cannot abort multipart uploads left open by an earlier run",
        1,
    )?;
    api.wait_for("ListMultipartUploads at", 1)?;
    api.wait_for("HTTP 501 Not Implemented NotImplemented", 1)?;
    Ok(())
}
