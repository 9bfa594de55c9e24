//! Who may capture what: one pcap-api with static users, the BOSH
//! director's UAA and Cloud Foundry's UAA, in front of a simulated Diego
//! landscape, asked straight over gRPC (as any client could) by every kind
//! of principal for every kind of target. Every row checks the gRPC code,
//! that no token is echoed, and that nothing is left attached on any cell;
//! the rows that are allowed must start on every origin. The API's log is
//! checked last: one audit line per decision, nothing forged, no colours.
//!
//! A second test stores captures of users of different issuers who share a
//! name, in a real S3-compatible store, and checks who sees what.
//!
//! These tests need root (they create namespaces and load eBPF programs).

use std::{collections::BTreeSet, fmt, fmt::Write as _, sync::Arc, time::Duration};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use pcap_proto::{
    tls::client_config,
    v1::{
        BoshTarget, CaptureOptions, CaptureRequest, CaptureResponse, CfAppTarget,
        GetDownloadUrlRequest, ListCapturesRequest, StartCapture, StaticTarget, StopCapture,
        Target, api_client::ApiClient, capture_request, capture_response::Payload, event, target,
    },
};
use pcap_tests::{
    TempDir,
    landscape::{ALICE_TOKEN, API_ADDRESS, AppSpec, Landscape},
    netns::Netns,
    pki::Validity,
    process::wait_until,
    s3::S3Server,
    servers::{
        Server,
        director::Instance,
        uaa::{KEY_ID, SigningKey, Uaa, UaaUser},
        unix_now,
    },
    stand_ins::{
        CF_SCOPES, space_role, start_bosh_uaa, start_cloud_controller, start_director, start_uaa,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, Streaming, transport::Channel};

/// The static admin (of stored captures), who may capture no target.
const CAROL_TOKEN: &str = "carol-static-admin-token-0042";
const APP: &str = "my-app";
const OTHER: &str = "other-app";
const DEPLOYMENT: &str = "cf";
const S3_PORT: u16 = 9000;
/// A static target that holders of `bosh.admin` of the director's UAA may
/// capture (besides `cells`, which only alice may).
const OPS_TARGET: &str = "cells-ops";
/// What the forged `kid` tries to write as a line of its own.
const FORGED: &str = "2026-12-04T00:00:00.000000Z  INFO audit: capture started issuer=\"static\" user_id=\"mallory\"";

/// The landscape, the UAAs, Cloud Controller, the director and (for the
/// store test) an S3 server, and the API in front of them.
struct World {
    // Dropped first: the servers go before the namespaces.
    _cc_server: Server,
    _cf_uaa_server: Server,
    _bosh_uaa_server: Server,
    _director_server: Server,
    cf_uaa: Arc<Uaa>,
    bosh_uaa: Arc<Uaa>,
    s3: Option<S3Server>,
    landscape: Landscape,
    dir: TempDir,
}

impl World {
    /// `my-app` (space `dev`) with three instances on cell 0, `other-app`
    /// (space `other`) on cell 1; static users alice (may capture `cells`)
    /// and carol (store admin, no target); `cells-ops` for `bosh.admin`
    /// of the BOSH UAA; with `store`, an S3 store whose admins are also
    /// BOSH `bosh.admin` holders.
    fn new(tag: &str, store: bool) -> anyhow::Result<Self> {
        let dir = TempDir::new(tag)?;
        let mut landscape = Landscape::builder()
            .cells(2)
            .app(AppSpec::new(APP, &[0, 0, 0]))
            .app(AppSpec::new(OTHER, &[1]).in_space("other"))
            .build(&dir)?;
        let tls = landscape
            .pki
            .ca
            .leaf("servers", &["127.0.0.1"], Validity::Current)?;

        let cf_users = ["dev", "auditor", "stranger", "orgman", "alice", "carol"]
            .iter()
            .map(|name| UaaUser::new(name, "p", &CF_SCOPES))
            .collect();
        let (cf_uaa, cf_uaa_server) = start_uaa(
            &landscape.control,
            &tls,
            &dir,
            "cf-uaa",
            cf_users,
            &[("cf", "")],
        )?;
        let (bosh_uaa, bosh_uaa_server) =
            start_bosh_uaa(&landscape.control, &tls, &dir, "bosh-uaa")?;

        let cells: Vec<Instance> = landscape
            .cells
            .iter()
            .map(|cell| Instance {
                job: "diego-cell".to_owned(),
                id: format!("0b2c7f3e-5c1d-4e8a-9f6b-1a2b3c4d5e6{}", cell.index),
                index: cell.index as u32,
                az: "z1".to_owned(),
                ips: vec![cell.underlay_ip().to_string()],
            })
            .collect();
        let director_server =
            start_director(&landscape.control, &tls, &bosh_uaa, (DEPLOYMENT, cells))?;

        let roles = vec![
            space_role("space_developer", "dev", "dev"),
            space_role("space_auditor", "auditor", "dev"),
            space_role("space_developer", "stranger", "other"),
            // An org manager sees the org's apps; the test Cloud Controller
            // shows apps by space, so the role names the app's space.
            space_role("organization_manager", "orgman", "dev"),
        ];
        let (_, cc_server) = start_cloud_controller(
            &landscape.control,
            &tls,
            &cf_uaa,
            landscape.cc_apps(),
            roles,
        )?;
        let cc_url = cc_server.url();

        landscape.start_agents("")?;
        let s3 = if store {
            Some(S3Server::start(&landscape.control, &dir, S3_PORT)?)
        } else {
            None
        };
        let ca = format!("{:?}", landscape.pki.ca.certificate.display().to_string());
        let ops_agents = landscape.agents_toml();
        let store_table = s3.as_ref().map_or_else(String::new, |s3| {
            s3.api_config("admin_scopes = [{ uaa = \"bosh\", scope = \"bosh.admin\" }]")
        });
        let extra = format!(
            "[[users]]\nname = \"carol\"\ntoken = \"{CAROL_TOKEN}\"\nadmin = true\n\n\
             [[targets]]\nname = \"{OPS_TARGET}\"\ninterfaces = [\"eth0\"]\n\
             allow = {{ scopes = [{{ uaa = \"bosh\", scope = \"bosh.admin\" }}] }}\n\
             agents = [\n{ops_agents}]\n\n\
             [bosh]\ndirector_url = \"{}\"\ndirector_ca = {ca}\n\n\
             [cf]\napi_url = \"{cc_url}\"\nca = {ca}\n\n{store_table}",
            director_server.url(),
        );
        let config = landscape.api_config(&extra)?;
        landscape.start_api(&config)?;
        Ok(Self {
            _cc_server: cc_server,
            _cf_uaa_server: cf_uaa_server,
            _bosh_uaa_server: bosh_uaa_server,
            _director_server: director_server,
            cf_uaa,
            bosh_uaa,
            s3,
            landscape,
            dir,
        })
    }

    /// What the client thread needs (the world itself stays here: its
    /// processes' stderr readers cannot be shared across threads).
    fn context(&self) -> Context<'_> {
        let mut interfaces = Vec::new();
        for cell in &self.landscape.cells {
            interfaces.push((
                format!("{}/eth0", cell.origin()),
                &cell.ns,
                "eth0".to_owned(),
            ));
        }
        for app in &self.landscape.apps {
            for instance in &app.instances {
                interfaces.push((
                    format!("{}/{}", app.name, instance.index),
                    &self.landscape.cells[instance.cell].ns,
                    instance.host_interface(),
                ));
            }
        }
        Context {
            ca: self.landscape.pki.ca.certificate.clone(),
            app_guid: self.landscape.app(APP).guid.clone(),
            interfaces,
        }
    }
}

/// The API's CA, the app's GUID, and every interface a capture could
/// attach to: (name, cell namespace, interface).
struct Context<'a> {
    ca: std::path::PathBuf,
    app_guid: String,
    interfaces: Vec<(String, &'a Netns, String)>,
}

impl Context<'_> {
    /// The interfaces that have something attached, with what.
    fn attached(&self) -> anyhow::Result<Vec<String>> {
        let mut attached = Vec::new();
        for (name, ns, interface) in &self.interfaces {
            let programs = ns.tcx_programs(interface)?;
            if !programs.is_empty() {
                attached.push(format!("{name}: {programs:?}"));
            }
        }
        Ok(attached)
    }

    fn assert_nothing_attached(&self, row: &str) -> anyhow::Result<()> {
        let attached = self.attached()?;
        ensure!(attached.is_empty(), "{row}: attached: {attached:?}");
        Ok(())
    }
}

/// What a row asks to capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Static target `cells` (alice only).
    Cells,
    /// Static target `cells-ops` (`bosh.admin` of the BOSH UAA).
    Ops,
    /// The BOSH deployment's `diego-cell` group.
    Bosh,
    /// The Cloud Foundry app `my-app`.
    App,
}

impl Kind {
    const ALL: [Self; 4] = [Self::Cells, Self::Ops, Self::Bosh, Self::App];

    fn target(self, app_guid: &str) -> Target {
        let kind = match self {
            Self::Cells | Self::Ops => target::Kind::Static(StaticTarget {
                name: if self == Self::Cells {
                    "cells"
                } else {
                    OPS_TARGET
                }
                .to_owned(),
            }),
            Self::Bosh => target::Kind::Bosh(BoshTarget {
                deployment: DEPLOYMENT.to_owned(),
                groups: vec!["diego-cell".to_owned()],
                instances: Vec::new(),
            }),
            Self::App => target::Kind::CfApp(CfAppTarget {
                app_guid: app_guid.to_owned(),
                process_type: String::new(),
                instances: Vec::new(),
                follow: false,
            }),
        };
        Target { kind: Some(kind) }
    }
}

/// One principal, one target, the expected answer.
struct Row {
    who: &'static str,
    token: Option<String>,
    kind: Kind,
    interfaces: &'static [&'static str],
    expect: Code,
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {:?}", self.who, self.kind)?;
        if !self.interfaces.is_empty() {
            write!(f, " -i {}", self.interfaces.join(","))?;
        }
        write!(f, " (expect {:?})", self.expect)
    }
}

/// `header.claims.signature`, each part base64url of its own.
fn raw_jwt(header: &serde_json::Value, claims: &serde_json::Value, signature: &[u8]) -> String {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// The claims of a valid CF UAA access token of `user_id`/`user_name`,
/// with `overrides` applied.
fn cf_claims(uaa: &Uaa, user: &str, overrides: &serde_json::Value) -> serde_json::Value {
    let now = unix_now();
    let mut claims = serde_json::json!({
        "jti": format!("{:032x}", now), "sub": format!("user-{user}"),
        "scope": ["cloud_controller.read", "openid"], "client_id": "cf", "cid": "cf",
        "azp": "cf", "grant_type": "password", "user_id": format!("user-{user}"),
        "origin": "uaa", "user_name": user, "email": format!("{user}@example.com"),
        "auth_time": now, "rev_sig": "5f3a9c1e", "iat": now, "exp": now + 600,
        "iss": uaa.issuer(), "zid": "uaa", "aud": ["cloud_controller", "openid", "cf"],
    });
    for (key, value) in overrides.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    claims
}

/// Tokens that no authenticator may accept, by what is wrong with them.
fn bad_tokens(world: &World) -> anyhow::Result<Vec<(&'static str, String)>> {
    let uaa = &world.cf_uaa;
    let forger = Uaa::new(
        uaa.url(),
        SigningKey::generate(&world.dir, "forger")?,
        vec![UaaUser::new("dev", "p", &["cloud_controller.admin"])],
        &[],
    );
    let claims = cf_claims(uaa, "dev", &serde_json::json!({}));
    let hs256 = {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(KEY_ID.to_owned());
        let key = jsonwebtoken::EncodingKey::from_secret(uaa.public_key_pem().as_bytes());
        jsonwebtoken::encode(&header, &claims, &key)?
    };
    Ok(vec![
        ("expired", uaa.access_token("dev", "cf", -600)?),
        (
            "wrong iss",
            uaa.sign_claims(&cf_claims(
                uaa,
                "dev",
                &serde_json::json!({"iss": "https://uaa.attacker.invalid/oauth/token"}),
            ))?,
        ),
        (
            "foreign key, known kid",
            forger.access_token("dev", "cf", 600)?,
        ),
        (
            "alg none",
            raw_jwt(
                &serde_json::json!({"alg": "none", "typ": "JWT", "kid": KEY_ID}),
                &claims,
                b"",
            ),
        ),
        ("HS256 signed with the public key", hs256),
        ("refresh token", uaa.refresh_token("dev", "cf")?),
        (
            "forged kid",
            raw_jwt(
                &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": format!("k\n{FORGED}")}),
                &claims,
                b"not a signature",
            ),
        ),
    ])
}

/// The matrix: who gets what on which target.
fn rows(world: &World) -> anyhow::Result<Vec<Row>> {
    use Code::{NotFound, Ok as Allowed, PermissionDenied as Denied, Unauthenticated};
    use Kind::{Cells, Ops};
    let cf = &world.cf_uaa;
    let bosh = &world.bosh_uaa;
    let mut rows = Vec::new();
    // `who` with `token` gets `codes` on the four kinds of target.
    let mut on_every_kind = |who, token: Option<String>, codes: [Code; 4]| {
        for (kind, expect) in Kind::ALL.into_iter().zip(codes) {
            rows.push(Row {
                who,
                token: token.clone(),
                kind,
                interfaces: &[],
                expect,
            });
        }
    };
    on_every_kind("no token", None, [Unauthenticated; 4]);
    for (who, token) in bad_tokens(world)? {
        on_every_kind(who, Some(token), [Unauthenticated; 4]);
    }
    // A CF UAA user named carol whose id is carol, like the static admin.
    let cf_carol = cf.sign_claims(&cf_claims(
        cf,
        "carol",
        &serde_json::json!({"user_id": "carol", "sub": "carol"}),
    ))?;
    let cf_user = |user: &str| cf.access_token(user, "cf", 600);
    let bosh_user = |user: &str| bosh.access_token(user, "bosh_cli", 600);
    #[rustfmt::skip]
    let principals: Vec<(&str, String, [Code; 4])> = vec![
        //                                                                          cells     cells-ops bosh      app
        ("client credentials without scopes", cf.client_token("robot", &[], 600)?, [NotFound, NotFound, Denied,   Denied]),
        ("space developer",                   cf_user("dev")?,                     [NotFound, NotFound, Denied,   Allowed]),
        ("space auditor",                     cf_user("auditor")?,                 [NotFound, NotFound, Denied,   Denied]),
        ("another space's developer",         cf_user("stranger")?,                [NotFound, NotFound, Denied,   NotFound]),
        ("org manager",                       cf_user("orgman")?,                  [NotFound, NotFound, Denied,   Denied]),
        ("BOSH admin",                        bosh_user("admin")?,                 [NotFound, Allowed,  Allowed,  Denied]),
        ("BOSH bosh.read user",               bosh_user("viewer")?,                [NotFound, NotFound, Denied,   Denied]),
        ("static user alice",                 ALICE_TOKEN.to_owned(),              [Allowed,  NotFound, Denied,   Denied]),
        ("static admin carol",                CAROL_TOKEN.to_owned(),              [NotFound, NotFound, Denied,   Denied]),
        ("CF user carol (id carol)",          cf_carol,                            [NotFound, NotFound, Denied,   NotFound]),
        ("CF user alice",                     cf_user("alice")?,                   [NotFound, NotFound, Denied,   NotFound]),
    ];
    for (who, token, codes) in principals {
        on_every_kind(who, Some(token), codes);
    }
    // A grant does not widen a target's interfaces.
    let bosh_admin = bosh_user("admin")?;
    for (who, token, kind, interfaces, expect) in [
        (
            "static user alice",
            ALICE_TOKEN,
            Cells,
            &["silk-vtep"][..],
            Denied,
        ),
        ("static user alice", ALICE_TOKEN, Cells, &["eth0"], Allowed),
        ("BOSH admin", &bosh_admin, Ops, &["eth0", "lo"], Denied),
    ] {
        rows.push(Row {
            who,
            token: Some(token.to_owned()),
            kind,
            interfaces,
            expect,
        });
    }
    Ok(rows)
}

async fn client(context: &Context<'_>) -> anyhow::Result<ApiClient<Channel>> {
    let tls = client_config(Some(&context.ca), None, Some("pcap-api"))?;
    let channel = Channel::from_shared(format!("https://{API_ADDRESS}"))?
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ApiClient::new(channel))
}

fn authorized<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ASCII");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

type Started = (mpsc::Sender<CaptureRequest>, Streaming<CaptureResponse>);

async fn start(
    client: &mut ApiClient<Channel>,
    token: Option<&str>,
    target: Target,
    interfaces: &[&str],
    store: bool,
) -> Result<Started, Status> {
    let (requests, stream) = mpsc::channel(4);
    let start = CaptureRequest {
        operation: Some(capture_request::Operation::Start(StartCapture {
            target: Some(target),
            options: Some(CaptureOptions {
                interfaces: interfaces.iter().map(|i| (*i).to_owned()).collect(),
                filter: "icmp".to_owned(),
                ..CaptureOptions::default()
            }),
            store,
        })),
    };
    requests.send(start).await.expect("the stream is open");
    let responses = client
        .capture(authorized(ReceiverStream::new(stream), token))
        .await?
        .into_inner();
    Ok((requests, responses))
}

/// Reads until every origin has started; fails on an origin that did not.
/// Returns the origins' names.
async fn until_started(responses: &mut Streaming<CaptureResponse>) -> anyhow::Result<Vec<String>> {
    let mut origins = Vec::new();
    let mut started = BTreeSet::new();
    let read = async {
        loop {
            let Some(response) = responses.message().await? else {
                bail!("the stream ended before every origin started");
            };
            match response.payload {
                Some(Payload::Origin(origin)) => origins.push(origin.name),
                Some(Payload::Event(e)) => match e.kind {
                    Some(event::Kind::CaptureStarted(_)) => {
                        started.insert(e.origin);
                    }
                    Some(event::Kind::CaptureStopped(_) | event::Kind::Congested(_)) => {}
                    other => bail!("origin {:?}: {other:?}: {}", e.origin, e.message),
                },
                _ => {}
            }
            if !origins.is_empty() && started.len() == origins.len() {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .context("no start within 20 s")??;
    Ok(origins)
}

/// Sends `stop` and reads to the end; the last `Stored`, if any.
async fn stop(started: Started) -> anyhow::Result<Option<pcap_proto::v1::Stored>> {
    let (requests, mut responses) = started;
    requests
        .send(CaptureRequest {
            operation: Some(capture_request::Operation::Stop(StopCapture {})),
        })
        .await?;
    let mut stored = None;
    let read = async {
        while let Some(response) = responses.message().await? {
            if let Some(Payload::Stored(s)) = response.payload {
                stored = Some(s);
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .context("the capture did not end within 20 s of stop")??;
    Ok(stored)
}

#[test]
fn every_principal_gets_exactly_its_due_on_every_kind_of_target() -> anyhow::Result<()> {
    let mut world = World::new("authz", false)?;
    let rows = rows(&world)?;
    let context = world.context();
    let context = &context;
    let failures = world.landscape.control.block_on(async || {
        let mut client = client(context).await?;
        let mut failures = Vec::new();
        for row in &rows {
            let target = row.kind.target(&context.app_guid);
            let token = row.token.as_deref();
            let result = start(&mut client, token, target, row.interfaces, false).await;
            let code = result.as_ref().err().map_or(Code::Ok, Status::code);
            if code != row.expect {
                let message = result.err().map(|s| s.message().to_owned());
                failures.push(format!("{row}: got {code:?} {message:?}"));
                continue;
            }
            match result {
                Err(status) => {
                    if let Some(token) = token
                        && status.message().contains(token)
                    {
                        failures.push(format!("{row}: the token was echoed"));
                    }
                    if let Err(e) = context.assert_nothing_attached(&row.to_string()) {
                        failures.push(e.to_string());
                    }
                }
                Ok(mut started) => {
                    match until_started(&mut started.1).await {
                        Ok(origins) => {
                            let expected = match row.kind {
                                // Three instances on one cell: one capture,
                                // one slot on that agent, all three start.
                                Kind::App => 3,
                                _ => 2,
                            };
                            if origins.len() != expected {
                                failures.push(format!("{row}: started {origins:?}"));
                            }
                        }
                        Err(e) => failures.push(format!("{row}: {e:#}")),
                    }
                    stop(started).await?;
                    let detached =
                        wait_until("every program is detached", Duration::from_secs(5), || {
                            Ok(context.attached()?.is_empty())
                        });
                    if let Err(e) = detached {
                        failures.push(format!("{row}: {e:#}"));
                    }
                }
            }
        }
        // A caller who sends no `start`: refused, and audited too.
        let (requests, stream) = mpsc::channel(1);
        requests
            .send(CaptureRequest {
                operation: Some(capture_request::Operation::Stop(StopCapture {})),
            })
            .await?;
        let code = client
            .capture(authorized(ReceiverStream::new(stream), Some(ALICE_TOKEN)))
            .await
            .err()
            .map_or(Code::Ok, |s| s.code());
        if code != Code::InvalidArgument {
            failures.push(format!("alice sends stop first: got {code:?}"));
        }
        Ok(failures)
    })?;
    ensure!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );

    let (_, lines) = world.landscape.api.take().context("the API")?.interrupt()?;
    assert_audit_log(&world, &rows, &lines)
}

/// The API's log: an audit line per decision, with issuer and user id;
/// nothing forged; no terminal colours in a log that is not a terminal.
fn assert_audit_log(world: &World, rows: &[Row], lines: &[String]) -> anyhow::Result<()> {
    let log = lines.join("\n");
    // The message of an audit line: what follows its own `INFO audit: `
    // (a forged kid puts that text again later in the line, escaped).
    let message = |line: &str| {
        line.split_once(" INFO audit: ")
            .map(|(_, rest)| rest.split(' ').take(2).collect::<Vec<_>>().join(" "))
    };
    let audit: Vec<&String> = lines.iter().filter(|l| message(l).is_some()).collect();
    let count = |what: &str| {
        audit
            .iter()
            .filter(|l| message(l).as_deref() == Some(what))
            .count()
    };
    let refused = count("capture refused");
    let allowed = count("capture started");
    let expected_allowed = rows.iter().filter(|r| r.expect == Code::Ok).count();
    // And the request that sent no `start`.
    let expected_refused = rows.len() - expected_allowed + 1;
    ensure!(
        refused == expected_refused && allowed == expected_allowed,
        "{refused} refusals and {allowed} starts audited, not {expected_refused} and \
         {expected_allowed}:\n{log}"
    );
    ensure!(
        !log.contains('\u{1b}'),
        "terminal colours in the log:\n{log}"
    );
    ensure!(
        audit.iter().any(|l| l.contains("capture refused")
            && l.contains("user_id=\"alice\" user=\"alice\" target=\"\"")
            && l.contains("the first request must be `start`")),
        "the request without start is not audited:\n{log}"
    );
    ensure!(
        !lines
            .iter()
            .any(|l| l.starts_with(FORGED) || l.starts_with("2026-12-04T00:00:00")),
        "a forged line:\n{log}"
    );
    ensure!(
        audit
            .iter()
            .any(|l| l.contains("capture refused") && l.contains("\\\\n2026-12-04T00:00:00")),
        "the forged kid is not logged escaped:\n{log}"
    );
    let app_guid = &world.landscape.app(APP).guid;
    let dev_start = format!(
        "issuer=\"{}\" user_id=\"user-dev\" user=\"dev\" target=\"cf:{app_guid}/web\"",
        world.cf_uaa.issuer()
    );
    ensure!(
        audit
            .iter()
            .any(|l| l.contains("capture started") && l.contains(&dev_start)),
        "no audit line {dev_start}:\n{log}"
    );
    ensure!(
        audit.iter().any(|l| l.contains("capture refused")
            && l.contains("user_id=\"user-dev\"")
            && l.contains("target=\"static:cells\"")
            && l.contains("code=NotFound")
            && l.contains("does not allow dev")),
        "the hidden target's refusal is not explained:\n{log}"
    );
    // Users of another issuer are told which UAA a target needs, and how
    // to get its token.
    for (user_id, target, needs) in [
        (
            "alice",
            "target=\"bosh:",
            "capturing BOSH VMs needs a token of the BOSH director's UAA",
        ),
        ("user-dev", "target=\"bosh:", "log in with `bosh log-in`"),
        (
            "alice",
            "target=\"cf:",
            "capturing apps needs a token of Cloud Foundry's UAA",
        ),
    ] {
        ensure!(
            audit.iter().any(|l| l.contains("capture refused")
                && l.contains(&format!("user_id=\"{user_id}\""))
                && l.contains(target)
                && l.contains("code=PermissionDenied")
                && l.contains(needs)),
            "{user_id} on {target}: no refusal saying {needs:?}:\n{log}"
        );
    }
    Ok(())
}

#[test]
fn stored_captures_are_isolated_across_issuers_for_users_who_share_a_name() -> anyhow::Result<()> {
    let world = World::new("authz-store", true)?;
    let cf = &world.cf_uaa;
    let dev = cf.access_token("dev", "cf", 600)?;
    let cf_alice = cf.access_token("alice", "cf", 600)?;
    let cf_carol = cf.sign_claims(&cf_claims(
        cf,
        "carol",
        &serde_json::json!({"user_id": "carol", "sub": "carol"}),
    ))?;
    let bosh_admin = world.bosh_uaa.access_token("admin", "bosh_cli", 600)?;
    let bosh_viewer = world.bosh_uaa.access_token("viewer", "bosh_cli", 600)?;
    let context = world.context();
    let context = &context;
    let (alices, devs) = world.landscape.control.block_on(async || {
        let mut client = client(context).await?;
        let mut stored = Vec::new();
        for (token, kind) in [(ALICE_TOKEN, Kind::Cells), (dev.as_str(), Kind::App)] {
            let target = kind.target(&context.app_guid);
            let mut started = start(&mut client, Some(token), target, &[], true)
                .await
                .with_context(|| format!("{kind:?}"))?;
            until_started(&mut started.1).await?;
            let done = stop(started).await?.context("no Stored at the end")?;
            stored.push(done.capture.context("Stored without capture")?.id);
        }
        let [alices, devs] = <[String; 2]>::try_from(stored).expect("two");

        let list = async |client: &mut ApiClient<Channel>, token: &str| {
            let captures = client
                .list_captures(authorized(ListCapturesRequest {}, Some(token)))
                .await?
                .into_inner()
                .captures;
            let mut seen: Vec<(String, String)> =
                captures.into_iter().map(|c| (c.id, c.owner)).collect();
            seen.sort();
            anyhow::Ok(seen)
        };
        let both = {
            let mut both = vec![
                (alices.clone(), "alice".to_owned()),
                (devs.clone(), "dev".to_owned()),
            ];
            both.sort();
            both
        };
        for (who, token, expected) in [
            (
                "static alice",
                ALICE_TOKEN,
                vec![(alices.clone(), "alice".to_owned())],
            ),
            (
                "CF dev",
                dev.as_str(),
                vec![(devs.clone(), "dev".to_owned())],
            ),
            ("CF alice", cf_alice.as_str(), Vec::new()),
            ("CF carol (id carol)", cf_carol.as_str(), Vec::new()),
            ("BOSH bosh.read user", bosh_viewer.as_str(), Vec::new()),
            ("static admin carol", CAROL_TOKEN, both.clone()),
            (
                "BOSH admin (admin_scopes)",
                bosh_admin.as_str(),
                both.clone(),
            ),
        ] {
            let seen = list(&mut client, token).await?;
            ensure!(seen == expected, "{who} lists {seen:?}, not {expected:?}");
        }
        for (who, token, code) in [
            ("CF alice", cf_alice.as_str(), Code::NotFound),
            ("CF carol (id carol)", cf_carol.as_str(), Code::NotFound),
            ("CF dev", dev.as_str(), Code::NotFound),
            ("static alice", ALICE_TOKEN, Code::Ok),
            ("static admin carol", CAROL_TOKEN, Code::Ok),
        ] {
            let got = client
                .get_download_url(authorized(
                    GetDownloadUrlRequest { id: alices.clone() },
                    Some(token),
                ))
                .await
                .err()
                .map_or(Code::Ok, |s| s.code());
            ensure!(got == code, "{who}'s download of alice's capture: {got:?}");
        }
        Ok((alices, devs))
    })?;

    // Owners are issuer and id: the keys say so.
    let keys = world.s3.as_ref().context("the store")?.objects()?;
    let cf_issuer = key_segment(&world.cf_uaa.issuer());
    let mut expected = vec![
        format!("captures/static:alice/{alices}.alice.pcapng"),
        format!("captures/{cf_issuer}:user-dev/{devs}.dev.pcapng"),
    ];
    expected.sort();
    ensure!(keys == expected, "objects {keys:?}, not {expected:?}");
    Ok(())
}

/// `text` as the store writes it in a key: letters, digits and `._@+-`
/// kept, every other byte `=XX`.
fn key_segment(text: &str) -> String {
    let mut segment = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"._@+-".contains(&b) {
            segment.push(char::from(b));
        } else {
            let _ = write!(segment, "={b:02X}");
        }
    }
    segment
}
