//! The platform's stand-ins (UAA, Cloud Controller, the BOSH director)
//! started as HTTPS servers on 127.0.0.1 in a namespace (the control
//! namespace of a landscape or cluster), as the system tests and the demo
//! set them up.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    TempDir,
    landscape::{Landscape, LandscapeBuilder, org_guid, space_guid, write_cf_config},
    netns::Netns,
    pki::{Leaf, Validity},
    servers::{
        Server, bind_in,
        cloud_controller::{CcApp, CcRole, CloudController},
        director::{Director, Instance},
        uaa::{SigningKey, Uaa, UaaUser},
    },
};

/// The scopes of a Cloud Foundry user who may read and write apps.
pub const CF_SCOPES: [&str; 3] = ["cloud_controller.read", "cloud_controller.write", "openid"];

/// The role `kind` (e.g. `space_developer`) of cf user `user` (GUID
/// `user-USER`) in space `space` of org `org`, as in every landscape.
pub fn space_role(kind: &str, user: &str, space: &str) -> CcRole {
    CcRole::new(
        kind,
        &format!("user-{user}"),
        &space_guid(space),
        &org_guid("org"),
    )
}

/// Binds 127.0.0.1 in `ns` and serves over TLS (`tls`) the router that
/// `make` builds for the server's `https://` URL; what `make` built, and
/// the running server.
pub fn serve_in<T>(
    ns: &Netns,
    tls: &Leaf,
    make: impl FnOnce(&str) -> anyhow::Result<(T, axum::Router)>,
) -> anyhow::Result<(T, Server)> {
    let listener = bind_in(ns, "127.0.0.1:0")?;
    let url = format!("https://{}", listener.local_addr()?);
    let (built, router) = make(&url)?;
    let server = Server::start(listener, tls, router)?;
    Ok((built, server))
}

/// A UAA in `ns` signing with a new key `key_name` (under `dir`), with
/// `users` and the OAuth `clients` (name, secret).
pub fn start_uaa(
    ns: &Netns,
    tls: &Leaf,
    dir: &Path,
    key_name: &str,
    users: Vec<UaaUser>,
    clients: &[(&str, &str)],
) -> anyhow::Result<(Arc<Uaa>, Server)> {
    serve_in(ns, tls, |url| {
        let uaa = Arc::new(Uaa::new(
            url,
            SigningKey::generate(dir, key_name)?,
            users,
            clients,
        ));
        Ok((Arc::clone(&uaa), uaa.router()))
    })
}

/// The BOSH director's UAA in `ns` (client `bosh_cli`, signing key
/// `key_name` under `dir`): user `admin` holds `bosh.admin`, user `viewer`
/// `bosh.read` (password `p` both).
pub fn start_bosh_uaa(
    ns: &Netns,
    tls: &Leaf,
    dir: &Path,
    key_name: &str,
) -> anyhow::Result<(Arc<Uaa>, Server)> {
    let users = vec![
        UaaUser::new("admin", "p", &["bosh.admin", "openid"]),
        UaaUser::new("viewer", "p", &["bosh.read", "openid"]),
    ];
    start_uaa(ns, tls, dir, key_name, users, &[("bosh_cli", "")])
}

/// A Cloud Controller in `ns` checking tokens of `uaa`, with `apps` and
/// `roles`.
pub fn start_cloud_controller(
    ns: &Netns,
    tls: &Leaf,
    uaa: &Arc<Uaa>,
    apps: Vec<CcApp>,
    roles: Vec<CcRole>,
) -> anyhow::Result<(Arc<CloudController>, Server)> {
    serve_in(ns, tls, |url| {
        let cc = Arc::new(CloudController::new(url, Arc::clone(uaa), apps, roles));
        Ok((Arc::clone(&cc), cc.router()))
    })
}

/// A BOSH director in `ns` checking tokens of `uaa`, with one deployment:
/// `deployment` of `instances`.
pub fn start_director(
    ns: &Netns,
    tls: &Leaf,
    uaa: &Arc<Uaa>,
    (deployment, instances): (&str, Vec<Instance>),
) -> anyhow::Result<Server> {
    let deployments = HashMap::from([(deployment.to_owned(), instances)]);
    let director = Arc::new(Director::new(Arc::clone(uaa), deployments));
    Ok(serve_in(ns, tls, |_| Ok(((), director.router())))?.1)
}

/// Cloud Foundry for a landscape: its UAA (client `cf`) and Cloud
/// Controller in the control namespace, over TLS with a leaf of the
/// landscape's CA.
pub struct CfServers {
    // The servers stop before the rest drops.
    /// The Cloud Controller's server.
    pub cc_server: Server,
    /// The UAA's server.
    pub uaa_server: Server,
    /// The UAA's state: its key, users, and what it was asked.
    pub uaa: Arc<Uaa>,
    /// The Cloud Controller's state: its apps, their instances and the roles.
    pub cc: Arc<CloudController>,
    /// The UAA's URL.
    pub uaa_url: String,
    /// The Cloud Controller's URL.
    pub cc_url: String,
}

impl CfServers {
    /// A certificate `cf` for 127.0.0.1 from the landscape's CA, for
    /// [`CfServers::start`].
    pub fn leaf(landscape: &Landscape) -> anyhow::Result<Leaf> {
        landscape
            .pki
            .ca
            .leaf("cf", &["127.0.0.1"], Validity::Current)
    }

    /// Starts UAA with `users` (signing key `cf-uaa` under `dir`) and Cloud
    /// Controller with the landscape's apps as `apps` (see
    /// [`Landscape::cc_apps`]) and `roles`, both serving with `tls` (e.g.
    /// [`CfServers::leaf`]).
    pub fn start(
        landscape: &Landscape,
        tls: &Leaf,
        dir: &Path,
        users: Vec<UaaUser>,
        apps: Vec<CcApp>,
        roles: Vec<CcRole>,
    ) -> anyhow::Result<Self> {
        let (uaa, uaa_server) =
            start_uaa(&landscape.control, tls, dir, "cf-uaa", users, &[("cf", "")])?;
        let (cc, cc_server) = start_cloud_controller(&landscape.control, tls, &uaa, apps, roles)?;
        Ok(Self {
            uaa_url: uaa_server.url(),
            cc_url: cc_server.url(),
            cc_server,
            uaa_server,
            uaa,
            cc,
        })
    }

    /// The API's `[cf]` table for this Cloud Controller (the landscape's
    /// CA), with `extra` appended.
    pub fn api_table(&self, landscape: &Landscape, extra: &str) -> String {
        format!(
            "[cf]\napi_url = \"{}\"\nca = {:?}\n{extra}\n",
            self.cc_url,
            landscape.pki.ca.certificate.display().to_string()
        )
    }

    /// Starts the landscape's agents, then pcap-api with this Cloud
    /// Foundry ([`CfServers::api_table`] with `extra`).
    pub fn start_agents_and_api(
        &self,
        landscape: &mut Landscape,
        extra: &str,
    ) -> anyhow::Result<()> {
        landscape.start_agents("")?;
        let config = landscape.api_config(&self.api_table(landscape, extra))?;
        landscape.start_api(&config)
    }
}

/// A landscape with Cloud Foundry in front of it ([`CfServers`]), its
/// agents and the API running, in a directory of its own.
pub struct CfLandscape {
    // Dropped first: the servers go before the namespaces.
    pub servers: CfServers,
    pub landscape: Landscape,
    pub dir: TempDir,
}

impl CfLandscape {
    /// Builds `landscape` in a new directory `tag`; starts Cloud Foundry
    /// with `users`, `roles` and the apps `apps` makes of the landscape
    /// (e.g. [`Landscape::cc_apps`]); then the agents, and the API with
    /// `cf_extra` in its `[cf]` table.
    pub fn start(
        tag: &str,
        landscape: LandscapeBuilder,
        users: Vec<UaaUser>,
        roles: Vec<CcRole>,
        apps: impl FnOnce(&Landscape) -> Vec<CcApp>,
        cf_extra: &str,
    ) -> anyhow::Result<Self> {
        let dir = TempDir::new(tag)?;
        let mut landscape = landscape.build(&dir)?;
        let tls = CfServers::leaf(&landscape)?;
        let apps = apps(&landscape);
        let servers = CfServers::start(&landscape, &tls, &dir, users, apps, roles)?;
        servers.start_agents_and_api(&mut landscape, cf_extra)?;
        Ok(Self {
            servers,
            landscape,
            dir,
        })
    }

    /// Logs cf user `user` (password-less client `cf`) in: a cf CLI home
    /// `home-USER` in the directory, with an access token valid for
    /// `seconds`; the home.
    pub fn log_in(&self, user: &str, seconds: i64) -> anyhow::Result<PathBuf> {
        let home = self.dir.join(format!("home-{user}"));
        let uaa = &self.servers.uaa;
        write_cf_config(
            &home,
            &self.servers.cc_url,
            uaa.url(),
            &uaa.access_token(user, "cf", seconds)?,
            &uaa.refresh_token(user, "cf")?,
        )?;
        Ok(home)
    }
}
