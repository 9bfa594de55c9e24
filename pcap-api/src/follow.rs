//! Watching and following an app capture's instances while it runs.
//!
//! Every `[cf] follow_interval` the capture asks its resolver for the
//! app's instances again ([`CfResolver::instances`]: the same checks as
//! at the start, with the caller's own token, so a role taken away or an
//! expired token ends following). What changed is told per origin as
//! `InstanceChanged`: an instance that stopped, crashed, restarted under a
//! new instance GUID or moved to another cell.
//!
//! With `CfAppTarget.follow`, an instance that runs and is not captured
//! yet (a scale-up, a restart, a move) becomes a new origin, announced
//! mid-stream and named `APP/INDEX#G` (`G` counts the instances of that
//! index added during the capture), started like the first ones (the
//! agent checks its container against silk's store) with what is left of
//! the capture's duration. The capture's slot, its packet and byte limits
//! and its duration cover every origin; followed origins also reconnect
//! when their agent restarts (`fanout`).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use pcap_proto::v1::{
    CaptureOptions, CfAppTarget, Event, InstanceChange, InstanceChanged, Target,
    capture_response::Payload, event, target,
};
use tokio::{
    sync::mpsc,
    time::{MissedTickBehavior, interval_at},
};

use crate::{
    auth::User,
    cf::CfResolver,
    fanout::{AgentMessage, FromAgent, Launcher},
    resolve::{AgentEndpoint, Instance, ResolveError},
    stop::{Stop, StopLevel},
};

/// Whether the request asks to follow its target (`CfAppTarget.follow`).
pub fn wanted(target: &Target) -> bool {
    matches!(&target.kind, Some(target::Kind::CfApp(app)) if app.follow)
}

/// One capture's watch over its target's instances.
pub struct Follow<'a> {
    pub resolver: &'a CfResolver,
    pub user: &'a User,
    pub app: &'a CfAppTarget,
    /// How often the resolver is asked.
    pub every: Duration,
    /// Capture instances that start later; else only tell changes.
    pub follow: bool,
    /// What agents are started with (the capture's whole duration).
    pub options: CaptureOptions,
    /// When the capture began, for what is left of its duration.
    pub began: Instant,
    pub stop: Stop,
}

/// An origin that captures one instance.
struct Tracked {
    origin: u32,
    index: u32,
    instance_guid: String,
    address: String,
    /// Its change was told: nothing more is said of it.
    gone: bool,
    /// Stops its agent task from reconnecting once the instance is gone.
    retire: Option<Stop>,
}

/// How the watch talks to the session: through the launcher when it
/// follows (it starts tasks, and keeps the session open), else through a
/// weak sender that lets the session end when the agents' tasks are done.
enum Channel {
    Following(Launcher),
    Watching(mpsc::WeakSender<AgentMessage>),
}

impl Channel {
    fn sender(&self) -> Option<mpsc::Sender<AgentMessage>> {
        match self {
            Self::Following(launcher) => Some(launcher.to_session().clone()),
            Self::Watching(weak) => weak.upgrade(),
        }
    }
}

struct State {
    tracked: Vec<Tracked>,
    /// Instances of each index added so far (the `#G` of the next is one
    /// more).
    generations: HashMap<u32, u32>,
    next_origin: u32,
    /// The last failure told, so a failing Cloud Controller is told once.
    failure_told: Option<String>,
}

impl Follow<'_> {
    /// Watches until the capture stops, its duration has passed, or (when
    /// not following) every agent task has ended. `initial` are the
    /// capture's origins in order, `retire` their reconnect handles.
    pub async fn run(
        self,
        launcher: Launcher,
        initial: &[AgentEndpoint],
        retire: Vec<Option<Stop>>,
    ) {
        let mut state = State {
            tracked: initial
                .iter()
                .zip(retire)
                .enumerate()
                .filter_map(|(origin, (endpoint, retire))| {
                    let container = endpoint.container.as_ref()?;
                    Some(Tracked {
                        origin: u32::try_from(origin).ok()?,
                        index: index_of(&endpoint.origin)?,
                        instance_guid: container.instance_guid.clone(),
                        address: endpoint.address.clone(),
                        gone: false,
                        retire,
                    })
                })
                .collect(),
            generations: HashMap::new(),
            next_origin: u32::try_from(initial.len()).unwrap_or(u32::MAX),
            failure_told: None,
        };
        let mut channel = if self.follow {
            Channel::Following(launcher)
        } else {
            let weak = launcher.to_session().downgrade();
            drop(launcher);
            Channel::Watching(weak)
        };
        let deadline = self.duration().map(|d| self.began + d);
        let mut ticks = interval_at(tokio::time::Instant::now() + self.every, self.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.stop.reached(StopLevel::Drain) => return,
                () = sleep_until(deadline) => return,
            }
            let instances = self.resolver.instances(self.user, self.app).await;
            let Some(sender) = channel.sender() else {
                return;
            };
            match instances {
                Ok(instances) => {
                    state.failure_told = None;
                    let launcher = match &mut channel {
                        Channel::Following(launcher) => Some(launcher),
                        Channel::Watching(_) => None,
                    };
                    self.apply(&mut state, &instances, launcher, &sender).await;
                }
                Err(ResolveError::Unavailable(message)) => {
                    if state.failure_told.as_ref() != Some(&message) {
                        let text = format!(
                            "cannot look at the app's instances now: {message}; trying again"
                        );
                        tell(&sender, None, text, None).await;
                        state.failure_told = Some(message);
                    }
                }
                Err(error) => {
                    let text = format!("no longer watching the app's instances: {error}");
                    tell(&sender, None, text, None).await;
                    return;
                }
            }
        }
    }

    fn duration(&self) -> Option<Duration> {
        self.options
            .limits
            .and_then(|l| l.duration_ms)
            .map(Duration::from_millis)
    }

    /// Starts what is new (when following), then tells what changed.
    async fn apply(
        &self,
        state: &mut State,
        instances: &[Instance],
        launcher: Option<&mut Launcher>,
        sender: &mpsc::Sender<AgentMessage>,
    ) {
        let mut successors = HashMap::new();
        if let Some(launcher) = launcher {
            for instance in instances {
                let Some(container) = &instance.endpoint.container else {
                    continue;
                };
                if state
                    .tracked
                    .iter()
                    .any(|t| t.instance_guid == container.instance_guid)
                {
                    continue;
                }
                let Some(origin) = self.add(state, instance, launcher).await else {
                    break;
                };
                successors.insert(instance.index, origin);
            }
        }
        for tracked in &mut state.tracked {
            if tracked.gone || successors.values().any(|o| *o == tracked.origin) {
                continue;
            }
            let Some((change, now, message)) = change_of(tracked, instances, self.follow) else {
                continue;
            };
            tracked.gone = true;
            if let Some(retire) = &tracked.retire {
                retire.request(StopLevel::Drain, "the instance is gone");
            }
            let changed = InstanceChanged {
                change: change as i32,
                state: now,
                successor: successors.get(&tracked.index).copied(),
            };
            tell(sender, Some(tracked.origin), message, Some(changed)).await;
        }
    }

    /// Announces and starts `instance` as a new origin; `None` when the
    /// capture's duration has passed.
    async fn add(
        &self,
        state: &mut State,
        instance: &Instance,
        launcher: &mut Launcher,
    ) -> Option<u32> {
        let mut options = self.options.clone();
        if let Some(duration) = self.duration() {
            let left = duration.saturating_sub(self.began.elapsed());
            let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            if left_ms == 0 {
                return None;
            }
            if let Some(limits) = options.limits.as_mut() {
                limits.duration_ms = Some(left_ms);
            }
        }
        let container = instance.endpoint.container.as_ref()?;
        let origin = state.next_origin;
        state.next_origin = state.next_origin.checked_add(1)?;
        let generation = state.generations.entry(instance.index).or_default();
        *generation += 1;
        let mut endpoint = instance.endpoint.clone();
        endpoint.origin = format!("{}#{generation}", endpoint.origin);
        launcher.announce(origin, &endpoint).await;
        let message = format!(
            "Cloud Controller reports instance {} (index {}) running on {}; capturing it as {}",
            container.instance_guid, instance.index, endpoint.address, endpoint.origin
        );
        let added = InstanceChanged {
            change: InstanceChange::Added as i32,
            state: instance.state.clone(),
            successor: Some(origin),
        };
        tell(launcher.to_session(), Some(origin), message, Some(added)).await;
        let retire = Stop::default();
        launcher
            .launch(origin, &endpoint, &options, Some(retire.clone()))
            .await;
        state.tracked.push(Tracked {
            origin,
            index: instance.index,
            instance_guid: container.instance_guid.clone(),
            address: endpoint.address.clone(),
            gone: false,
            retire: Some(retire),
        });
        Some(origin)
    }
}

/// What became of a tracked instance, if anything: the change, the state
/// Cloud Controller reports now, and the message.
fn change_of(
    tracked: &Tracked,
    instances: &[Instance],
    follow: bool,
) -> Option<(InstanceChange, String, String)> {
    let guid = &tracked.instance_guid;
    let details = |i: &Instance| {
        i.details
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    };
    let stopped_or_crashed = |state: &str| {
        if state == "CRASHED" {
            InstanceChange::Crashed
        } else {
            InstanceChange::Stopped
        }
    };
    if let Some(same) = instances.iter().find(|i| i.guid.as_ref() == Some(guid)) {
        return (same.state != "RUNNING").then(|| {
            (
                stopped_or_crashed(&same.state),
                same.state.clone(),
                format!(
                    "Cloud Controller reports instance {guid} {}{}",
                    same.state,
                    details(same)
                ),
            )
        });
    }
    let not_followed = if follow {
        ""
    } else {
        " (not captured: `--follow` captures new instances)"
    };
    let mut at_index = instances.iter().filter(|i| i.index == tracked.index);
    let successor = at_index
        .clone()
        .find(|i| i.state == "RUNNING" && i.endpoint.container.is_some());
    Some(match (successor, at_index.next()) {
        (Some(new), _) => {
            let new_guid = new.guid.as_deref().unwrap_or_default();
            if new.endpoint.address == tracked.address {
                (
                    InstanceChange::Restarted,
                    new.state.clone(),
                    format!(
                        "instance {guid} is gone; index {} runs again on the same cell as \
                         instance {new_guid}{not_followed}",
                        tracked.index
                    ),
                )
            } else {
                (
                    InstanceChange::Moved,
                    new.state.clone(),
                    format!(
                        "instance {guid} is gone; index {} runs again on {} as instance \
                         {new_guid}{not_followed}",
                        tracked.index, new.endpoint.address
                    ),
                )
            }
        }
        (None, Some(other)) => (
            stopped_or_crashed(&other.state),
            other.state.clone(),
            format!(
                "instance {guid} is gone; index {} is {}{}",
                tracked.index,
                other.state,
                details(other)
            ),
        ),
        (None, None) => (
            InstanceChange::Stopped,
            String::new(),
            format!(
                "instance {guid} is gone from Cloud Controller's stats (stopped or scaled down)"
            ),
        ),
    })
}

/// `2` of `my-app/2` (the resolver names origins `PREFIX/INDEX`).
fn index_of(origin: &str) -> Option<u32> {
    origin.rsplit_once('/')?.1.parse().ok()
}

/// Sends an event to the session, for `origin` or the whole capture.
async fn tell(
    sender: &mpsc::Sender<AgentMessage>,
    origin: Option<u32>,
    message: String,
    changed: Option<InstanceChanged>,
) {
    let event = Event {
        origin,
        message,
        kind: changed.map(event::Kind::InstanceChanged),
    };
    let _ = sender
        .send(AgentMessage {
            // Events about the whole capture go through origin 0's slot
            // in the channel; the session reads `event.origin`.
            origin: origin.unwrap_or(0),
            body: FromAgent::Payload(Payload::Event(event)),
        })
        .await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_proto::v1::ContainerScope;

    fn instance(index: u32, state: &str, guid: Option<&str>, address: &str) -> Instance {
        Instance {
            index,
            state: state.to_owned(),
            guid: guid.map(str::to_owned),
            details: None,
            endpoint: AgentEndpoint {
                origin: format!("my-app/{index}"),
                address: address.to_owned(),
                unavailable: (state != "RUNNING").then(|| format!("my-app/{index} is {state}")),
                container: guid.filter(|_| state == "RUNNING").map(|g| ContainerScope {
                    instance_guid: g.to_owned(),
                    app_guid: "a".to_owned(),
                    overlay_ip: String::new(),
                }),
            },
        }
    }

    fn tracked(index: u32, guid: &str, address: &str) -> Tracked {
        Tracked {
            origin: index,
            index,
            instance_guid: guid.to_owned(),
            address: address.to_owned(),
            gone: false,
            retire: None,
        }
    }

    #[test]
    fn changes_are_named_from_the_stats() {
        let t = tracked(1, "g1", "cell-a:9494");
        let running = [instance(1, "RUNNING", Some("g1"), "cell-a:9494")];
        assert!(change_of(&t, &running, true).is_none());

        let crashed = [instance(1, "CRASHED", Some("g1"), "cell-a:9494")];
        let (change, state, _) = change_of(&t, &crashed, true).unwrap();
        assert_eq!(
            (change, state.as_str()),
            (InstanceChange::Crashed, "CRASHED")
        );

        let restarted = [instance(1, "RUNNING", Some("g2"), "cell-a:9494")];
        let (change, _, message) = change_of(&t, &restarted, false).unwrap();
        assert_eq!(change, InstanceChange::Restarted);
        assert!(message.contains("--follow"), "{message}");

        let moved = [instance(1, "RUNNING", Some("g2"), "cell-b:9494")];
        let (change, _, message) = change_of(&t, &moved, true).unwrap();
        assert_eq!(change, InstanceChange::Moved);
        assert!(message.contains("cell-b:9494"), "{message}");

        let (change, state, message) = change_of(&t, &[], true).unwrap();
        assert_eq!((change, state.as_str()), (InstanceChange::Stopped, ""));
        assert!(
            message.contains("gone from Cloud Controller's stats"),
            "{message}"
        );

        let down = [instance(1, "DOWN", None, "")];
        let (change, state, _) = change_of(&t, &down, true).unwrap();
        assert_eq!((change, state.as_str()), (InstanceChange::Stopped, "DOWN"));
    }

    #[test]
    fn indices_come_from_origin_names() {
        assert_eq!(index_of("my-app/2"), Some(2));
        assert_eq!(index_of("my-app:worker/10"), Some(10));
        assert_eq!(index_of("cell-0"), None);
    }
}
