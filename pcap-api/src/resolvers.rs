//! The API's resolvers, one per kind of target: a target's kind picks its
//! resolver here, and nowhere else. Static targets are always served; BOSH
//! and Cloud Foundry targets only when `[bosh]` or `[cf]` is configured.

use pcap_proto::v1::{CfAppTarget, ResolverStatus, Target, target};

use crate::{
    auth::User,
    bosh::BoshResolver,
    cf::CfResolver,
    resolve::{self, ResolveError, Resolved, StaticResolver},
};

pub struct Resolvers {
    pub static_targets: StaticResolver,
    pub bosh: Option<BoshResolver>,
    pub cf: Option<CfResolver>,
}

impl Resolvers {
    /// The agents of `target`, as `user` may capture them, from the
    /// resolver of its kind.
    pub async fn resolve(&self, user: &User, target: &Target) -> Result<Resolved, ResolveError> {
        match &target.kind {
            None => Err(ResolveError::NoTarget),
            Some(target::Kind::Static(name)) => self.static_targets.resolve(user, name),
            Some(target::Kind::Bosh(bosh)) => {
                configured(self.bosh.as_ref(), target)?
                    .resolve(user, bosh)
                    .await
            }
            Some(target::Kind::CfApp(app)) => {
                configured(self.cf.as_ref(), target)?
                    .resolve(user, app)
                    .await
            }
        }
    }

    /// For a target whose instances change while it is captured (a Cloud
    /// Foundry app, with `[cf]` configured): the resolver that `follow`
    /// asks again, and the app.
    pub fn follower<'a>(&'a self, target: &'a Target) -> Option<(&'a CfResolver, &'a CfAppTarget)> {
        match (&self.cf, &target.kind) {
            (Some(cf), Some(target::Kind::CfApp(app))) => Some((cf, app)),
            _ => None,
        }
    }

    /// Each configured resolver's health, static first.
    pub async fn statuses(&self) -> Vec<ResolverStatus> {
        let mut statuses = vec![self.static_targets.status()];
        if let Some(bosh) = &self.bosh {
            statuses.push(bosh.status().await);
        }
        if let Some(cf) = &self.cf {
            statuses.push(cf.status().await);
        }
        statuses
    }
}

fn configured<'a, R>(resolver: Option<&'a R>, target: &Target) -> Result<&'a R, ResolveError> {
    resolver.ok_or_else(|| {
        ResolveError::Unsupported(format!(
            "this API is not configured for targets like {}",
            resolve::describe(Some(target))
        ))
    })
}

#[cfg(test)]
mod tests {
    use pcap_proto::v1::{BoshTarget, StaticTarget};

    use super::*;

    #[tokio::test]
    async fn a_target_goes_to_the_resolver_of_its_kind() {
        let resolvers = Resolvers {
            static_targets: StaticResolver::new(&[], 9494),
            bosh: None,
            cf: None,
        };
        let alice = User::named("alice");
        assert_eq!(
            resolvers.resolve(&alice, &Target { kind: None }).await,
            Err(ResolveError::NoTarget)
        );
        let vms = Target {
            kind: Some(target::Kind::Static(StaticTarget { name: "vms".into() })),
        };
        assert_eq!(
            resolvers.resolve(&alice, &vms).await,
            Err(ResolveError::UnknownTarget("vms".into()))
        );
        let bosh = Target {
            kind: Some(target::Kind::Bosh(BoshTarget {
                deployment: "cf".into(),
                groups: vec!["router".into()],
                ..BoshTarget::default()
            })),
        };
        assert_eq!(
            resolvers.resolve(&alice, &bosh).await,
            Err(ResolveError::Unsupported(
                "this API is not configured for targets like bosh:cf/router".into()
            ))
        );
        assert!(resolvers.follower(&bosh).is_none());
        let names: Vec<String> = resolvers
            .statuses()
            .await
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["static"]);
    }
}
