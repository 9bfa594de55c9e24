//! The real API server on 127.0.0.1 with generated certificates, in front
//! of fake agents (tonic `Agent` services in this process), driven through
//! a TLS `ApiClient`. Synchronisation is by channels only.

use std::{
    fs,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use pcap_api::{config::Config, server};
use pcap_proto::packets::Packet;
use pcap_proto::unix_now_ns as now_ns;
use pcap_proto::{
    COMPATIBILITY_LEVEL,
    tls::{KeyPair, client_config, server_config},
    v1::{
        AgentRequest, AgentStart, CaptureOptions, CaptureRequest, CaptureResponse, CaptureStarted,
        CaptureStopped, Event, InterfaceDescription, Limit, Limits, Packets, StartCapture,
        StaticTarget, Statistics, StatusRequest, StatusResponse, StopCapture, Target,
        agent_request,
        agent_server::{Agent, AgentServer},
        api_client::ApiClient,
        capture_request,
        capture_response::Payload,
        event, target,
    },
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair as RcgenKey};
use tokio::{
    net::TcpListener,
    sync::{Notify, mpsc, oneshot},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Code, Request, Response, Status, Streaming,
    transport::{Channel, Endpoint, Server, server::TcpIncoming},
};

const TOKEN: &str = "token-for-alice";
/// Bounds every wait, so that a bug fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

// ---- certificates -----------------------------------------------------------

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, and certificates signed by it for the API (server and client
    /// side, named "pcap-api") and the agents ("pcap-agent").
    fn generate(test: &str) -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pcap-api-{test}"));
        fs::create_dir_all(&dir).unwrap();
        let ca_key = RcgenKey::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "pcap test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        for (file, name) in [("api", "pcap-api"), ("agent", "pcap-agent")] {
            let key = RcgenKey::generate().unwrap();
            let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &issuer).unwrap();
            fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
            fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        }
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

// ---- fake agents --------------------------------------------------------------

/// What a fake agent observed.
#[derive(Debug)]
enum Seen {
    Started(AgentStart),
    /// The API sent `stop`.
    Stopped,
    /// The API closed or broke the request stream without `stop`.
    Closed,
}

#[derive(Clone)]
enum Behaviour {
    /// Sends an interface, `capture_started` and packets with these
    /// timestamps, then waits for `stop` (and `finish`, when given) to send
    /// statistics and `capture_stopped`.
    Capture {
        timestamps: Vec<u64>,
        finish: Option<Arc<Notify>>,
    },
    Refuse,
}

impl Behaviour {
    /// [`Behaviour::Capture`] that needs no `finish`.
    fn capture(timestamps: Vec<u64>) -> Self {
        Self::Capture {
            timestamps,
            finish: None,
        }
    }
}

struct FakeAgent {
    behaviour: Behaviour,
    seen: mpsc::UnboundedSender<Seen>,
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    type CaptureStream = ReceiverStream<Result<CaptureResponse, Status>>;

    async fn capture(
        &self,
        request: Request<Streaming<AgentRequest>>,
    ) -> Result<Response<Self::CaptureStream>, Status> {
        let Behaviour::Capture { timestamps, finish } = self.behaviour.clone() else {
            return Err(Status::permission_denied("this agent serves nobody"));
        };
        let mut requests = request.into_inner();
        let Some(AgentRequest {
            operation: Some(agent_request::Operation::Start(start)),
        }) = requests.message().await?
        else {
            return Err(Status::invalid_argument("the first request must be start"));
        };
        let origin = start.origin;
        self.seen.send(Seen::Started(start)).unwrap();
        let seen = self.seen.clone();
        let (responses, stream) = mpsc::channel(16);
        tokio::spawn(async move {
            let count = timestamps.len() as u64;
            let packets: Vec<Packet> = timestamps
                .into_iter()
                .map(|timestamp_ns| Packet {
                    timestamp_ns,
                    original_length: 60,
                    origin,
                    data: vec![origin as u8; 60],
                    ..Packet::default()
                })
                .collect();
            for payload in [
                Payload::Interface(InterfaceDescription {
                    origin,
                    id: 0,
                    name: "eth0".into(),
                    link_type: 1,
                    snaplen: 262_144,
                }),
                event(Some(origin), event::Kind::CaptureStarted(CaptureStarted {})),
                Payload::Packets(Packets::from_packets(origin, &packets)),
            ] {
                let _ = responses.send(Ok(response(payload))).await;
            }
            let stopped = matches!(
                requests.message().await,
                Ok(Some(AgentRequest {
                    operation: Some(agent_request::Operation::Stop(_))
                }))
            );
            let _ = seen.send(if stopped { Seen::Stopped } else { Seen::Closed });
            if !stopped {
                return;
            }
            if let Some(finish) = finish {
                finish.notified().await;
            }
            let statistics = Statistics {
                origin,
                interface: 0,
                seen: count,
                matched: count,
                sent: count,
                ..Statistics::default()
            };
            for payload in [
                Payload::Statistics(statistics),
                event(Some(origin), event::Kind::CaptureStopped(CaptureStopped {})),
            ] {
                let _ = responses.send(Ok(response(payload))).await;
            }
            // Dropping `responses` ends the stream, as a real agent does.
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Err(Status::unimplemented("not faked"))
    }
}

fn response(payload: Payload) -> CaptureResponse {
    CaptureResponse {
        payload: Some(payload),
    }
}

fn event(origin: Option<u32>, kind: event::Kind) -> Payload {
    Payload::Event(Event {
        origin,
        message: String::new(),
        kind: Some(kind),
    })
}

/// Serves a fake agent with mutual TLS; returns its address and what it
/// observes.
async fn fake_agent(
    pki: &Pki,
    behaviour: Behaviour,
) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (seen, observed) = mpsc::unbounded_channel();
    let identity = KeyPair {
        certificate: &pki.path("agent.crt"),
        private_key: &pki.path("agent.key"),
    };
    let tls = server_config(&identity, Some(&pki.path("ca.crt"))).unwrap();
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(AgentServer::new(FakeAgent { behaviour, seen }))
        .serve_with_incoming(TcpIncoming::from(listener));
    tokio::spawn(server);
    (address, observed)
}

/// An address where nothing listens.
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// ---- the API ----------------------------------------------------------------

struct Api {
    address: SocketAddr,
    pki: Pki,
    shutdown: Option<oneshot::Sender<()>>,
    stopped: oneshot::Receiver<Result<(), server::ServeError>>,
}

impl Api {
    /// Starts the API with `reorder_window` and a target "vms" whose agents
    /// are `agents` (origin names "agent-0", ...).
    async fn start(pki: Pki, reorder_window: f64, agents: &[SocketAddr]) -> Self {
        // Shows the API's log (one line per capture) with the test's output.
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let agents: Vec<String> = agents
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{{ origin = \"agent-{i}\", address = \"{a}\" }}"))
            .collect();
        let dir = pki.dir.display();
        let text = format!(
            r#"
            listen = "127.0.0.1:0"
            [tls]
            certificate = "{dir}/api.crt"
            private_key = "{dir}/api.key"
            [agents]
            ca = "{dir}/ca.crt"
            certificate = "{dir}/api.crt"
            private_key = "{dir}/api.key"
            connect_timeout = 5.0
            [merge]
            reorder_window = {reorder_window}
            [limits]
            max_duration = 60.0
            drain_grace = 10.0
            [metrics]
            enabled = false
            [[users]]
            name = "alice"
            token = "{TOKEN}"
            [[targets]]
            name = "vms"
            interfaces = ["eth0"]
            allow = {{ users = ["alice"] }}
            agents = [{}]
            "#,
            agents.join(", ")
        );
        let path = pki.path("api.toml");
        fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (shutdown, signal) = oneshot::channel::<()>();
        let (done, stopped) = oneshot::channel();
        tokio::spawn(async move {
            let signal = async {
                let _ = signal.await;
            };
            let _ = done.send(server::serve(&config, listener, signal).await);
        });
        Self {
            address,
            pki,
            shutdown: Some(shutdown),
            stopped,
        }
    }

    async fn client(&self) -> ApiClient<Channel> {
        let tls = client_config(Some(&self.pki.path("ca.crt")), None, Some("pcap-api")).unwrap();
        let channel = Endpoint::from_shared(format!("https://{}", self.address))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        ApiClient::new(channel)
    }

    /// Starts a capture of `target`; returns the request sender (for
    /// `stop`) and the response stream.
    async fn capture(
        &self,
        token: Option<&str>,
        target: &str,
        limits: Limits,
    ) -> Result<(mpsc::Sender<CaptureRequest>, Streaming<CaptureResponse>), Status> {
        capture_on(self.client().await, token, target, limits).await
    }
}

/// Starts a capture of `target` on an existing connection.
async fn capture_on(
    mut client: ApiClient<Channel>,
    token: Option<&str>,
    target: &str,
    limits: Limits,
) -> Result<(mpsc::Sender<CaptureRequest>, Streaming<CaptureResponse>), Status> {
    {
        let (requests, request_stream) = mpsc::channel(4);
        let start = CaptureRequest {
            operation: Some(capture_request::Operation::Start(StartCapture {
                target: Some(Target {
                    kind: Some(target::Kind::Static(StaticTarget {
                        name: target.into(),
                    })),
                }),
                options: Some(CaptureOptions {
                    filter: "udp".into(),
                    limits: Some(limits),
                    ..CaptureOptions::default()
                }),
                store: false,
            })),
        };
        requests.send(start).await.unwrap();
        let mut request = Request::new(ReceiverStream::new(request_stream));
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        let responses = client.capture(request).await?.into_inner();
        Ok((requests, responses))
    }
}

async fn next(responses: &mut Streaming<CaptureResponse>) -> Payload {
    within("a response", responses.message())
        .await
        .expect("the stream broke")
        .expect("the stream ended")
        .payload
        .expect("a payload")
}

/// Reads until the stream ends.
async fn rest(responses: &mut Streaming<CaptureResponse>) -> Vec<Payload> {
    let mut payloads = Vec::new();
    while let Some(response) = within("the end", responses.message())
        .await
        .expect("the stream broke")
    {
        payloads.extend(response.payload);
    }
    payloads
}

fn event_kind(payload: &Payload) -> Option<(Option<u32>, event::Kind)> {
    match payload {
        Payload::Event(Event {
            origin,
            kind: Some(kind),
            ..
        }) => Some((*origin, kind.clone())),
        _ => None,
    }
}

fn packets(payloads: &[Payload]) -> Vec<Packet> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Packets(batch) => Some(batch.packets().unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn statistics(payloads: &[Payload]) -> Vec<Statistics> {
    payloads
        .iter()
        .filter_map(|p| match p {
            Payload::Statistics(s) => Some(*s),
            _ => None,
        })
        .collect()
}

async fn expect_start(seen: &mut mpsc::UnboundedReceiver<Seen>) -> AgentStart {
    match within("an agent start", seen.recv()).await {
        Some(Seen::Started(start)) => start,
        other => panic!("expected a start, got {other:?}"),
    }
}

/// After the stop: each agent's statistics (3 packets sent, none out of
/// order or withheld) after all packets, its `capture_stopped`, and last
/// the capture's own `capture_stopped`.
fn check_the_end(after_stop: &[Payload]) {
    let stats = statistics(after_stop);
    assert_eq!(stats.len(), 2);
    for s in &stats {
        assert_eq!(
            (s.sent, s.matched, s.out_of_order, s.after_limit),
            (3, 3, 0, 0)
        );
    }
    let first_statistics = after_stop
        .iter()
        .position(|p| matches!(p, Payload::Statistics(_)))
        .unwrap();
    let last_packets = after_stop
        .iter()
        .rposition(|p| matches!(p, Payload::Packets(_)))
        .unwrap();
    assert!(last_packets < first_statistics, "packets before statistics");
    assert_eq!(
        event_kind(after_stop.last().unwrap()),
        Some((None, event::Kind::CaptureStopped(CaptureStopped {}))),
        "ends with capture_stopped without origin"
    );
    let stopped_origins: Vec<_> = after_stop
        .iter()
        .filter_map(event_kind)
        .filter(|(_, k)| matches!(k, event::Kind::CaptureStopped(_)))
        .map(|(origin, _)| origin)
        .collect();
    assert_eq!(stopped_origins.len(), 3);
}

// ---- tests ----------------------------------------------------------------------

#[tokio::test]
async fn requests_without_a_valid_token_or_target_are_refused() {
    let pki = Pki::generate("refusals");
    let api = Api::start(pki, 0.5, &[dead_address().await]).await;
    let no_token = api
        .capture(None, "vms", Limits::default())
        .await
        .unwrap_err();
    assert_eq!(no_token.code(), Code::Unauthenticated);
    let bad_token = api
        .capture(Some("nope"), "vms", Limits::default())
        .await
        .unwrap_err();
    assert_eq!(bad_token.code(), Code::Unauthenticated);
    let unknown = api
        .capture(Some(TOKEN), "cells", Limits::default())
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test]
async fn merges_two_agents_and_reports_the_others() {
    let pki = Pki::generate("merge");
    let base = now_ns();
    let ms = 1_000_000;
    let (a, mut seen_a) = fake_agent(
        &pki,
        Behaviour::capture(vec![base + ms, base + 3 * ms, base + 5 * ms]),
    )
    .await;
    let (b, mut seen_b) = fake_agent(
        &pki,
        Behaviour::capture(vec![base + 2 * ms, base + 4 * ms, base + 6 * ms]),
    )
    .await;
    let dead = dead_address().await;
    let (refusing, _) = fake_agent(&pki, Behaviour::Refuse).await;
    // A window of an hour: packets leave only when the capture ends, so
    // their order does not depend on timing.
    let api = Api::start(pki, 3600.0, &[a, b, dead, refusing]).await;

    let (requests, mut responses) = api
        .capture(Some(TOKEN), "vms", Limits::default())
        .await
        .unwrap();
    for id in 0..4 {
        let Payload::Origin(origin) = next(&mut responses).await else {
            panic!("expected origin {id} first");
        };
        assert_eq!(origin.id, id);
        assert_eq!(origin.name, format!("agent-{id}"));
    }
    for (origin, seen) in [(0, &mut seen_a), (1, &mut seen_b)] {
        let start = expect_start(seen).await;
        assert_eq!(start.compatibility_level, COMPATIBILITY_LEVEL);
        assert_eq!(start.origin, origin);
        let options = start.options.unwrap();
        assert_eq!(options.interfaces, ["eth0"], "the target's default");
        assert_eq!(options.filter, "udp");
        assert_eq!(
            options.limits.unwrap().duration_ms,
            Some(60_000),
            "capped by max_duration"
        );
    }

    // Until both agents run and the others have failed.
    let mut before_stop = Vec::new();
    let mut started = Vec::new();
    let mut unavailable = None;
    let mut refused = None;
    while started.len() < 2 || unavailable.is_none() || refused.is_none() {
        let payload = next(&mut responses).await;
        match event_kind(&payload) {
            Some((Some(origin), event::Kind::CaptureStarted(_))) => started.push(origin),
            Some((Some(origin), event::Kind::InstanceUnavailable(_))) => unavailable = Some(origin),
            Some((Some(origin), event::Kind::StartFailed(failed))) => {
                refused = Some((origin, failed.code));
            }
            _ => {}
        }
        before_stop.push(payload);
    }
    started.sort_unstable();
    assert_eq!(started, [0, 1]);
    assert_eq!(unavailable, Some(2));
    assert_eq!(refused, Some((3, Code::PermissionDenied as i32)));
    let interfaces: Vec<_> = before_stop
        .iter()
        .filter_map(|p| match p {
            Payload::Interface(i) => Some((i.origin, i.name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(interfaces.len(), 2);
    assert!(packets(&before_stop).is_empty(), "held by the window");

    let stop = CaptureRequest {
        operation: Some(capture_request::Operation::Stop(StopCapture {})),
    };
    requests.send(stop).await.unwrap();
    for seen in [&mut seen_a, &mut seen_b] {
        assert!(matches!(
            within("stop", seen.recv()).await,
            Some(Seen::Stopped)
        ));
    }

    let after_stop = rest(&mut responses).await;
    let merged = packets(&after_stop);
    let times: Vec<u64> = merged.iter().map(|p| p.timestamp_ns - base).collect();
    assert_eq!(times, [ms, 2 * ms, 3 * ms, 4 * ms, 5 * ms, 6 * ms]);
    let origins: Vec<u32> = merged.iter().map(|p| p.origin).collect();
    assert_eq!(origins, [0, 1, 0, 1, 0, 1]);

    check_the_end(&after_stop);
}

#[tokio::test]
async fn a_packet_limit_stops_every_agent() {
    let pki = Pki::generate("limit");
    let base = now_ns();
    let (a, mut seen_a) =
        fake_agent(&pki, Behaviour::capture(vec![base + 1, base + 3, base + 5])).await;
    let (b, mut seen_b) =
        fake_agent(&pki, Behaviour::capture(vec![base + 2, base + 4, base + 6])).await;
    let api = Api::start(pki, 0.0, &[a, b]).await;
    let limits = Limits {
        packets: Some(4),
        ..Limits::default()
    };
    let (_requests, mut responses) = api.capture(Some(TOKEN), "vms", limits).await.unwrap();

    for seen in [&mut seen_a, &mut seen_b] {
        let start = expect_start(seen).await;
        assert_eq!(
            start.options.unwrap().limits.unwrap().packets,
            Some(4),
            "agents get the cap"
        );
    }
    // Nobody asks the agents to stop but the limit.
    for seen in [&mut seen_a, &mut seen_b] {
        assert!(matches!(
            within("stop", seen.recv()).await,
            Some(Seen::Stopped)
        ));
    }
    let payloads = rest(&mut responses).await;
    assert_eq!(packets(&payloads).len(), 4);
    let limit_event = payloads
        .iter()
        .filter_map(event_kind)
        .find(|(_, k)| matches!(k, event::Kind::LimitReached(_)));
    assert_eq!(
        limit_event,
        Some((
            None,
            event::Kind::LimitReached(pcap_proto::v1::LimitReached {
                limit: Limit::Packets as i32
            })
        ))
    );
    let stats = statistics(&payloads);
    assert_eq!(stats.len(), 2);
    assert_eq!(stats.iter().map(|s| s.sent).sum::<u64>(), 4);
    assert_eq!(stats.iter().map(|s| s.after_limit).sum::<u64>(), 2);
    for s in &stats {
        assert_eq!(s.matched, s.sent + s.after_limit);
    }
    assert_eq!(
        event_kind(payloads.last().unwrap()),
        Some((None, event::Kind::CaptureStopped(CaptureStopped {})))
    );
}

#[tokio::test]
async fn a_byte_limit_cuts_inside_one_agent_s_batch() {
    let pki = Pki::generate("bytelimit");
    let base = now_ns();
    // Five packets of 60 bytes in one batch; 150 bytes let two through.
    let (a, mut seen_a) = fake_agent(
        &pki,
        Behaviour::capture((1..=5).map(|i| base + i).collect()),
    )
    .await;
    let api = Api::start(pki, 0.0, &[a]).await;
    let limits = Limits {
        bytes: Some(150),
        ..Limits::default()
    };
    let (_requests, mut responses) = api.capture(Some(TOKEN), "vms", limits).await.unwrap();
    expect_start(&mut seen_a).await;
    assert!(matches!(
        within("stop", seen_a.recv()).await,
        Some(Seen::Stopped)
    ));
    let payloads = rest(&mut responses).await;
    let times: Vec<u64> = packets(&payloads)
        .iter()
        .map(|p| p.timestamp_ns - base)
        .collect();
    assert_eq!(times, [1, 2]);
    let limit = payloads
        .iter()
        .filter_map(event_kind)
        .find(|(_, k)| matches!(k, event::Kind::LimitReached(_)));
    assert_eq!(
        limit,
        Some((
            None,
            event::Kind::LimitReached(pcap_proto::v1::LimitReached {
                limit: Limit::Bytes as i32
            })
        ))
    );
    let stats = statistics(&payloads);
    assert_eq!(
        stats
            .iter()
            .map(|s| (s.sent, s.after_limit, s.matched))
            .collect::<Vec<_>>(),
        [(2, 3, 5)]
    );
}

#[tokio::test]
async fn agents_detach_when_the_client_goes_away() {
    let pki = Pki::generate("gone");
    let base = now_ns();
    let (a, mut seen_a) = fake_agent(&pki, Behaviour::capture(vec![base])).await;
    let (b, mut seen_b) = fake_agent(&pki, Behaviour::capture(vec![base])).await;
    let api = Api::start(pki, 0.5, &[a, b]).await;
    let (requests, mut responses) = api
        .capture(Some(TOKEN), "vms", Limits::default())
        .await
        .unwrap();
    let mut started = 0;
    while started < 2 {
        if let Some((_, event::Kind::CaptureStarted(_))) = event_kind(&next(&mut responses).await) {
            started += 1;
        }
    }
    for seen in [&mut seen_a, &mut seen_b] {
        expect_start(seen).await;
    }

    drop(responses);
    drop(requests);
    for seen in [&mut seen_a, &mut seen_b] {
        // Within a second, whichever way the API lets go.
        let observed = tokio::time::timeout(Duration::from_secs(1), seen.recv())
            .await
            .expect("the agent was not released within a second");
        assert!(
            matches!(observed, Some(Seen::Stopped | Seen::Closed)),
            "{observed:?}"
        );
    }
}

#[tokio::test]
async fn shutdown_drains_running_captures_and_refuses_new_ones() {
    let pki = Pki::generate("shutdown");
    // The agent holds its final statistics until told, so that the API is
    // still draining when the next capture comes.
    let finish = Arc::new(Notify::new());
    let (a, mut seen_a) = fake_agent(
        &pki,
        Behaviour::Capture {
            timestamps: vec![now_ns()],
            finish: Some(Arc::clone(&finish)),
        },
    )
    .await;
    let mut api = Api::start(pki, 0.0, &[a]).await;
    let (_requests, mut responses) = api
        .capture(Some(TOKEN), "vms", Limits::default())
        .await
        .unwrap();
    expect_start(&mut seen_a).await;
    let status = api
        .client()
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.healthy);
    assert_eq!(status.active_captures, 1);
    assert_eq!(status.compatibility_level, COMPATIBILITY_LEVEL);
    assert_eq!(status.resolvers[0].name, "static");

    let connected = api.client().await;
    api.shutdown.take().unwrap().send(()).unwrap();
    assert!(matches!(
        within("stop", seen_a.recv()).await,
        Some(Seen::Stopped)
    ));
    let refused = capture_on(connected, Some(TOKEN), "vms", Limits::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(refused.message(), "the API is shutting down");
    finish.notify_one();
    let payloads = rest(&mut responses).await;
    assert_eq!(
        statistics(&payloads).len(),
        1,
        "final statistics still arrive"
    );
    assert_eq!(
        event_kind(payloads.last().unwrap()),
        Some((None, event::Kind::CaptureStopped(CaptureStopped {})))
    );
    within("the server to return", &mut api.stopped)
        .await
        .unwrap()
        .unwrap();
}
