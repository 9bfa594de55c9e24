//! `pcap capture` end to end: the built binary against a fake pcap-api
//! served over TLS on 127.0.0.1, scripted message by message by each test.
//!
//! Synchronisation is by what the two sides observe: the fake server
//! reports every request it receives, and the tests wait for the lines
//! `pcap` prints on stderr. Timeouts only bound how long a broken test hangs.

#[path = "support/wireshark.rs"]
mod wireshark;

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use pcap_proto::packets::Packet;
use pcap_proto::v1::api_server::{Api, ApiServer};
use pcap_proto::v1::capture_request::Operation;
use pcap_proto::v1::capture_response::Payload;
use pcap_proto::v1::{
    CaptureRequest, CaptureResponse, CaptureStarted, CaptureStopped, Congested, Direction, Event,
    InstanceUnavailable, InterfaceDescription, Limit, LimitReached, OriginDescription, Packets,
    Stage, StartFailed, Statistics, StatusRequest, StatusResponse, event, target,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::sync::{mpsc as async_mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use wireshark::{ScratchFile, capinfos_value, tshark_block_fields, tshark_rows};

/// How long any single wait may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);
/// 2023-11-14T22:13:20Z, in nanoseconds.
const T0: u64 = 1_700_000_000_000_000_000;
const TOKEN: &str = "secret-token-for-alice";

// ---- the fake API ------------------------------------------------------------

/// What the fake API saw.
#[derive(Debug)]
enum Seen {
    /// The `authorization` metadata of the call.
    Authorization(Option<String>),
    Request(CaptureRequest),
}

/// How the fake API answers the call.
enum Reply {
    Refuse(Status),
    /// A response stream fed by the test.
    Stream(async_mpsc::UnboundedReceiver<Result<CaptureResponse, Status>>),
}

struct FakeApi {
    reply: Mutex<Option<Reply>>,
    seen: mpsc::Sender<Seen>,
}

type ResponseStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<CaptureResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Api for FakeApi {
    type CaptureStream = ResponseStream;

    async fn capture(
        &self,
        request: Request<Streaming<CaptureRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.to_str().unwrap().to_owned());
        let _ = self.seen.send(Seen::Authorization(authorization));
        let mut requests = request.into_inner();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                let _ = seen.send(Seen::Request(request));
            }
        });
        match self.reply.lock().unwrap().take() {
            Some(Reply::Refuse(status)) => Err(status),
            Some(Reply::Stream(responses)) => Ok(Response::new(Box::pin(
                UnboundedReceiverStream::new(responses),
            ))),
            None => Err(Status::resource_exhausted(
                "the fake API serves one capture",
            )),
        }
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn list_captures(
        &self,
        _: Request<pcap_proto::v1::ListCapturesRequest>,
    ) -> Result<Response<pcap_proto::v1::ListCapturesResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }

    async fn get_download_url(
        &self,
        _: Request<pcap_proto::v1::GetDownloadUrlRequest>,
    ) -> Result<Response<pcap_proto::v1::DownloadUrl>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

/// The fake API on its own runtime and thread. Dropping it (or [`kill`])
/// drops that runtime, which closes every connection at once.
///
/// [`kill`]: FakeServer::kill
struct FakeServer {
    address: SocketAddr,
    ca: PathBuf,
    seen: mpsc::Receiver<Seen>,
    responses: Option<async_mpsc::UnboundedSender<Result<CaptureResponse, Status>>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: ScratchDir,
}

impl FakeServer {
    /// `pcap capture --ca CA ARGS` (as [`TOKEN`]) against this server,
    /// trusting its certificate.
    fn pcap_with_ca(&self, args: &[&str]) -> Pcap {
        let ca = self.ca.to_str().unwrap();
        Pcap::start(&self.url(), Some(TOKEN), &[&["--ca", ca], args].concat())
    }

    /// A streaming server that `pcap capture --ca CA ARGS` (see
    /// [`pcap_with_ca`]) has called, and that pcap.
    ///
    /// [`pcap_with_ca`]: FakeServer::pcap_with_ca
    fn called_with_ca(args: &[&str]) -> (Self, Pcap) {
        let server = Self::streaming();
        let pcap = server.pcap_with_ca(args);
        server.expect_call();
        (server, pcap)
    }

    /// Starts `pcap capture ARGS` (as [`TOKEN`]) against this streaming
    /// server and answers its call: origin 0 on `eth0`, its first `count`
    /// packets, and the start; returns once pcap says it captures.
    fn capturing_on_eth0(&mut self, args: &[&str], count: u64) -> Pcap {
        let mut pcap = Pcap::start(&self.url(), Some(TOKEN), args);
        self.expect_call();
        self.send(origin(0));
        self.send(interface(0, 0, "eth0"));
        self.send(packets(0, 0, 0, count));
        self.send(started(0));
        pcap.wait_for("capturing on eth0");
        pcap
    }

    /// A server whose response stream the test feeds with [`send`].
    ///
    /// [`send`]: FakeServer::send
    fn streaming() -> Self {
        let (responses, stream) = async_mpsc::unbounded_channel();
        let mut server = Self::start(Reply::Stream(stream));
        server.responses = Some(responses);
        server
    }

    /// A server that answers the call with `status`.
    fn refusing(status: Status) -> Self {
        Self::start(Reply::Refuse(status))
    }

    fn start(reply: Reply) -> Self {
        let dir = ScratchDir::new();
        let (ca, identity) = certificates(&dir.0);
        let (seen_tx, seen) = mpsc::channel();
        let api = FakeApi {
            reply: Mutex::new(Some(reply)),
            seen: seen_tx,
        };
        let (address_tx, address) = mpsc::channel();
        let (kill, killed) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                address_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = Server::builder()
                    .tls_config(ServerTlsConfig::new().identity(identity))
                    .unwrap()
                    .add_service(ApiServer::new(api))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    result = serve => result.unwrap(),
                    _ = killed => {}
                }
            });
        });
        Self {
            address: address.recv_timeout(PATIENCE).unwrap(),
            ca,
            seen,
            responses: None,
            kill: Some(kill),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.address.port())
    }

    /// The next thing the API saw.
    fn next_seen(&self) -> Seen {
        self.seen
            .recv_timeout(PATIENCE)
            .expect("the fake API saw nothing more")
    }

    /// The authorization header, then the start request, of the call.
    fn expect_call(&self) -> (Option<String>, CaptureRequest) {
        let Seen::Authorization(authorization) = self.next_seen() else {
            panic!("expected the call first");
        };
        let Seen::Request(start) = self.next_seen() else {
            panic!("expected a request");
        };
        assert!(
            matches!(start.operation, Some(Operation::Start(_))),
            "{start:?}"
        );
        (authorization, start)
    }

    fn expect_stop(&self) {
        let Seen::Request(request) = self.next_seen() else {
            panic!("expected a request");
        };
        assert!(
            matches!(request.operation, Some(Operation::Stop(_))),
            "{request:?}"
        );
    }

    fn send(&self, payload: Payload) {
        self.responses
            .as_ref()
            .expect("a streaming server")
            .send(Ok(CaptureResponse {
                payload: Some(payload),
            }))
            .unwrap();
    }

    /// Ends the response stream normally.
    fn end(&mut self) {
        self.responses = None;
    }

    /// Drops the server's runtime: every connection closes mid-stream.
    fn kill(&mut self) {
        self.kill.take();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA (written to `dir/ca.crt`) and a server identity for 127.0.0.1 that
/// it signed.
fn certificates(dir: &Path) -> (PathBuf, Identity) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();

    let params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &ca).unwrap();
    (
        ca_path,
        Identity::from_pem(certificate.pem(), key.serialize_pem()),
    )
}

/// A directory in the temporary directory, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let file = ScratchFile::new("pki");
        std::fs::create_dir_all(&file.0).unwrap();
        Self(file.0.clone())
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- messages --------------------------------------------------------------

fn origin(id: u32) -> Payload {
    Payload::Origin(OriginDescription {
        id,
        name: format!("vm-{id}"),
        address: format!("10.1.{id}.2:9494"),
    })
}

fn interface(origin: u32, id: u32, name: &str) -> Payload {
    Payload::Interface(InterfaceDescription {
        origin,
        id,
        name: name.to_owned(),
        link_type: 1,
        snaplen: 262_144,
    })
}

fn event(origin: Option<u32>, message: &str, kind: event::Kind) -> Payload {
    Payload::Event(Event {
        origin,
        message: message.to_owned(),
        kind: Some(kind),
    })
}

fn started(origin: u32) -> Payload {
    event(
        Some(origin),
        "",
        event::Kind::CaptureStarted(CaptureStarted {}),
    )
}

fn stopped(origin: Option<u32>) -> Payload {
    event(origin, "", event::Kind::CaptureStopped(CaptureStopped {}))
}

/// Packets `first..first + count` of (origin, interface), alternately
/// inbound and outbound, 60-byte frames whose last byte is the number.
fn packets(origin: u32, interface: u32, first: u64, count: u64) -> Payload {
    let packets: Vec<Packet> = (first..first + count)
        .map(|n| {
            let mut data = vec![0xFF; 12];
            data.extend_from_slice(&[0x88, 0xB5]); // local experimental ethertype
            data.resize(59, 0);
            data.push(n as u8);
            Packet {
                timestamp_ns: T0 + n,
                original_length: 60,
                direction: if n % 2 == 0 {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                }
                .into(),
                origin,
                interface,
                data,
                comment: None,
            }
        })
        .collect();
    Payload::Packets(Packets::from_packets(origin, &packets))
}

fn statistics(origin: u32, interface: u32, sent: u64) -> Payload {
    Payload::Statistics(Statistics {
        origin,
        interface,
        seen: sent + 10,
        matched: sent + 3,
        sent,
        dropped_kernel_ring: 1,
        dropped_kernel_copy: 0,
        dropped_agent_queue: 2,
        start_ns: T0,
        end_ns: T0 + 1_000,
        ..Statistics::default()
    })
}

// ---- the pcap binary -------------------------------------------------------

/// A running `pcap capture`, its stderr read line by line.
struct Pcap {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stderr_lines: Vec<String>,
    stdout: Option<JoinHandle<Vec<u8>>>,
}

impl Pcap {
    /// `pcap capture --api URL --target vms ARGS...`; PCAP_TOKEN is `token`.
    fn start(api: &str, token: Option<&str>, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pcap"));
        command
            .args(["capture", "--api", api, "--target", "vms"])
            .args(args)
            .env_remove("PCAP_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            command.env("PCAP_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            stdout.read_to_end(&mut bytes).unwrap();
            bytes
        });
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (lines_tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let _ = lines_tx.send(line.unwrap());
            }
        });
        Self {
            child,
            stderr: lines,
            stderr_lines: Vec::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits for a stderr line that contains `text`.
    fn wait_for(&mut self, text: &str) {
        while !self.stderr_lines.iter().any(|line| line.contains(text)) {
            match self.stderr.recv_timeout(PATIENCE) {
                Ok(line) => self.stderr_lines.push(line),
                Err(error) => panic!(
                    "pcap printed no line with {text:?} ({error}); stderr so far:\n{}",
                    self.stderr_lines.join("\n")
                ),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; the status, all of stderr and all of stdout.
    /// Waits for pcap to exit, checks that it exited with `code`; its
    /// stderr and stdout.
    fn exits(mut self, code: i32) -> (String, Vec<u8>) {
        let status = self.child.wait().unwrap();
        let stdout = self.stdout.take().unwrap().join().unwrap();
        while let Ok(line) = self.stderr.recv_timeout(PATIENCE) {
            self.stderr_lines.push(line);
        }
        let stderr = self.stderr_lines.join("\n");
        assert_eq!(status.code(), Some(code), "{stderr}");
        (stderr, stdout)
    }
}

fn path_str(file: &ScratchFile) -> &str {
    file.0.to_str().unwrap()
}

// ---- tests -----------------------------------------------------------------

#[test]
fn writes_each_origin_and_interface_to_pcapng_and_reports_unavailable_origins() {
    let mut server = FakeServer::streaming();
    let file = ScratchFile::new("capture.pcapng");
    let pcap = server.pcap_with_ca(&[
        "-w",
        path_str(&file),
        "-i",
        "eth0",
        "-i",
        "eth1",
        "-c",
        "6",
        "tcp",
        "port",
        "80",
    ]);

    let (authorization, start) = server.expect_call();
    assert_eq!(
        authorization.as_deref(),
        Some("Bearer secret-token-for-alice")
    );
    assert_start_request(start);

    for id in 0..3 {
        server.send(origin(id));
    }
    server.send(event(
        Some(1),
        "connection refused",
        event::Kind::InstanceUnavailable(InstanceUnavailable {}),
    ));
    server.send(event(
        Some(2),
        "client name \"x\" is not allowed",
        event::Kind::StartFailed(StartFailed { code: 7 }),
    ));
    server.send(interface(0, 0, "eth0"));
    server.send(interface(0, 1, "eth1"));
    server.send(started(0));
    server.send(packets(0, 0, 0, 4));
    server.send(packets(0, 1, 4, 2));
    server.send(event(
        Some(0),
        "",
        event::Kind::Congested(Congested {
            stage: Stage::AgentQueue.into(),
            dropped: 2,
        }),
    ));
    server.send(statistics(0, 0, 4));
    server.send(statistics(0, 1, 2));
    server.send(event(
        None,
        "",
        event::Kind::LimitReached(LimitReached {
            limit: Limit::Packets.into(),
        }),
    ));
    server.send(stopped(Some(0)));
    server.send(stopped(None));
    server.end();

    let (stderr, _) = pcap.exits(0);
    for line in [
        "pcap: vm-1 (10.1.1.2:9494) unavailable: connection refused",
        "pcap: vm-2 refused the capture (PERMISSION_DENIED): client name \"x\" is not allowed",
        "pcap: vm-0 (10.1.0.2:9494): capturing on eth0, eth1",
        "pcap: vm-0: 2 packets dropped (agent send queue full: the network or this client is \
         slower than the traffic)",
        "pcap: limit reached: 6 packets",
        "pcap: vm-0 (10.1.0.2:9494): 6 packets (360 B) received; seen 26, matched 12, \
         dropped 6 (kernel ring 2, agent queue 4)",
        "pcap: vm-1 (10.1.1.2:9494): unavailable",
        &format!("pcap: {} holds 6 packets", path_str(&file)),
    ] {
        assert!(
            stderr.lines().any(|l| l == line),
            "no line {line:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains(TOKEN), "the token is never printed");

    assert_two_interfaces_with_statistics(&file.0);
}

/// What `-i eth0 -i eth1 -c 6 tcp port 80` asks for.
fn assert_start_request(start: CaptureRequest) {
    let Some(Operation::Start(start)) = start.operation else {
        unreachable!("checked by expect_call")
    };
    let options = start.options.unwrap();
    assert_eq!(options.filter, "tcp port 80");
    assert_eq!(options.interfaces, ["eth0", "eth1"]);
    assert_eq!(options.limits.unwrap().packets, Some(6));
    assert!(matches!(
        start.target.unwrap().kind,
        Some(target::Kind::Static(ref s)) if s.name == "vms"
    ));
}

/// vm-0/eth0 with packets 0..4 and vm-0/eth1 with 4..6, then their statistics.
fn assert_two_interfaces_with_statistics(file: &Path) {
    let rows = tshark_rows(
        file,
        &[
            "frame.interface_name",
            "frame.interface_description",
            "frame.packet_flags_direction",
            "frame.time_epoch",
        ],
    );
    let expected: Vec<String> = (0..6)
        .map(|n| {
            let iface = if n < 4 { "eth0" } else { "eth1" };
            format!(
                "vm-0/{iface}|{iface} on vm-0 (10.1.0.2:9494)|{}|1700000000.00000000{n}",
                if n % 2 == 0 { 1 } else { 2 }
            )
        })
        .collect();
    assert_eq!(rows, expected);

    let fields = tshark_block_fields(
        file,
        &[
            "pcapng.options.option.data.interface.received",
            "pcapng.options.option.data.interface.accepted_by_filter",
            "pcapng.options.option.data.interface.dropped",
            "pcapng.options.option.data.interface.dropped_by_os",
            "pcapng.options.option.data.interface.delivered_to_user",
        ],
    );
    assert_eq!(fields, ["14,12", "7,5", "1,1", "2,2", "4,2"]);
}

#[test]
fn a_refused_capture_exits_1_with_the_code_and_a_hint() {
    let server = FakeServer::refusing(Status::unauthenticated("no valid bearer token"));
    let ca = server.ca.to_str().unwrap().to_owned();
    let file = ScratchFile::new("refused.pcapng");
    let pcap = Pcap::start(
        &server.url(),
        None,
        &["--ca", &ca, "--token", "wrong-token", "-w", path_str(&file)],
    );
    let (authorization, _) = server.expect_call();
    assert_eq!(authorization.as_deref(), Some("Bearer wrong-token"));

    let (stderr, _) = pcap.exits(1);
    assert!(
        stderr.contains(
            "pcap: the API refused the capture: UNAUTHENTICATED: no valid bearer token \
             (check --token or PCAP_TOKEN)"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-token"),
        "the token is never printed"
    );
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "0");
}

#[test]
fn a_broken_connection_exits_1_and_leaves_a_valid_file() {
    let mut server = FakeServer::streaming();
    let ca = server.ca.to_str().unwrap().to_owned();
    let file = ScratchFile::new("broken.pcapng");
    let pcap = server.capturing_on_eth0(&["--ca", &ca, "-w", path_str(&file)], 3);
    server.kill();

    let (stderr, _) = pcap.exits(1);
    let expected = format!(
        "; {} holds the 3 packets received before that",
        path_str(&file)
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("pcap: connection to the API lost: ") && l.ends_with(&expected)),
        "{stderr}"
    );
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "3");
    let comments = tshark_block_fields(&file.0, &["pcapng.options.option.data.comment"]);
    assert!(
        comments[0].contains("vm-0/eth0: written 3; no statistics arrived"),
        "{comments:?}"
    );
}

#[test]
fn ctrl_c_sends_stop_and_every_packet_until_the_end_reaches_stdout() {
    let mut server = FakeServer::streaming();
    // --insecure: no --ca, and the fake API's certificate is not trusted.
    let mut pcap = server.capturing_on_eth0(&["--insecure", "-w", "-"], 2);

    pcap.signal("INT");
    server.expect_stop();
    pcap.wait_for("pcap: stopping");
    server.send(packets(0, 0, 2, 3));
    server.send(statistics(0, 0, 5));
    server.send(stopped(Some(0)));
    server.send(stopped(None));
    server.end();

    let (stderr, stdout) = pcap.exits(0);
    assert!(
        stderr.contains("pcap: stdout received 5 packets"),
        "{stderr}"
    );
    let file = ScratchFile::new("stdout.pcapng");
    std::fs::write(&file.0, stdout).unwrap();
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "5");
    let delivered = tshark_block_fields(
        &file.0,
        &["pcapng.options.option.data.interface.delivered_to_user"],
    );
    assert_eq!(delivered, ["5"]);
}

/// Reads pcapng blocks from `reader` until `packets` Enhanced Packet Blocks
/// have come; the block types read.
fn read_blocks_until_packets(reader: &mut impl std::io::Read, packets: usize) -> Vec<u32> {
    let mut types = Vec::new();
    while types.iter().filter(|&&t| t == 6).count() < packets {
        let mut header = [0; 8];
        reader.read_exact(&mut header).unwrap();
        let kind = u32::from_le_bytes(header[..4].try_into().unwrap());
        let length = u32::from_le_bytes(header[4..].try_into().unwrap());
        let mut rest = vec![0; usize::try_from(length).unwrap() - 8];
        reader.read_exact(&mut rest).unwrap();
        types.push(kind);
    }
    types
}

/// Wireshark reads `-w FIFO` live and stops by closing it: packets reach
/// the fifo as they come, and the closed fifo stops the capture (exit 0).
#[test]
fn a_reader_closing_the_fifo_stops_the_capture() {
    let mut server = FakeServer::streaming();
    let fifo = ScratchFile::new("live.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo.0)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.0.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::open(fifo).unwrap();
            // Closed on return, with the capture still running.
            read_blocks_until_packets(&mut file, 2)
        })
    };
    let mut pcap = server.capturing_on_eth0(&["--insecure", "-w", path_str(&fifo)], 2);
    // The header, the interface and both packets, before any stop.
    assert_eq!(reader.join().unwrap(), [0x0a0d_0d0a, 1, 6, 6]);

    server.send(packets(0, 0, 2, 3));
    server.expect_stop();
    pcap.wait_for("closed by its reader");
    server.send(stopped(None));
    server.end();
    let (stderr, _) = pcap.exits(0);
    assert!(!stderr.contains("cannot write"), "{stderr}");
}

#[test]
fn a_second_ctrl_c_quits_at_once_with_a_valid_file() {
    let mut server = FakeServer::streaming();
    let ca = server.ca.to_str().unwrap().to_owned();
    let file = ScratchFile::new("twice.pcapng");
    let mut pcap = server.capturing_on_eth0(&["--ca", &ca, "-w", path_str(&file)], 2);

    pcap.signal("TERM");
    server.expect_stop();
    pcap.wait_for("pcap: stopping");
    pcap.signal("INT");

    let (stderr, _) = pcap.exits(0);
    assert!(
        stderr.contains("pcap: quitting without waiting"),
        "{stderr}"
    );
    assert_eq!(capinfos_value(&file.0, "Number of packets"), "2");
    server.end();
}

#[test]
fn lines_without_w_name_the_origin_and_interface() {
    let (mut server, pcap) = FakeServer::called_with_ca(&[]);
    server.send(origin(3));
    server.send(interface(3, 0, "eth0"));
    server.send(packets(3, 0, 0, 2));
    server.send(stopped(None));
    server.end();

    let (_, stdout) = pcap.exits(0);
    let stdout = String::from_utf8(stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("22:13:20.000000 vm-3/eth0 In  "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("22:13:20.000000 vm-3/eth0 Out "),
        "{stdout}"
    );
}

#[test]
fn an_unreachable_or_untrusted_api_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let file = ScratchFile::new("unreachable.pcapng");
    let (stderr, _) = Pcap::start(&url, Some(TOKEN), &["-w", path_str(&file)]).exits(1);
    // As tcpdump opens its device before its file: nothing was captured,
    // so nothing was written.
    assert!(!file.0.exists(), "{} was created", file.0.display());
    assert!(
        stderr.starts_with(&format!("pcap: cannot reach the API at {url}/: ")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");

    // The system's roots do not know the fake API's CA.
    let server = FakeServer::refusing(Status::internal("never reached"));
    let (stderr, _) = Pcap::start(&server.url(), Some(TOKEN), &[]).exits(1);
    assert!(stderr.contains("cannot reach the API"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(
        stderr.contains("(check --ca, or use --insecure for development)"),
        "{stderr}"
    );
}

#[test]
fn every_origin_failing_exits_1() {
    let (mut server, pcap) = FakeServer::called_with_ca(&[]);
    server.send(origin(0));
    server.send(event(
        Some(0),
        "connection refused",
        event::Kind::InstanceUnavailable(InstanceUnavailable {}),
    ));
    server.end();
    let (stderr, _) = pcap.exits(1);
    assert!(
        stderr.contains("pcap: the capture started on no origin"),
        "{stderr}"
    );
}
