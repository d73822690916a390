//! Kubernetes Events on the objects wasmconfd leaves out, so that the team that owns one sees
//! why in `kubectl describe` and `kubectl get events`, not only in wasmconfd's log.
//!
//! An Event is a `Warning` with reason `WasmconfdSkipped` and the log's reason as its message,
//! published when the problem starts (the render loop reports each problem once, not at every
//! render), at most [`PER_RENDER`] per render, through kube-runtime's recorder, which folds
//! repeats of one event into a series. Publishing is best effort: it never holds up a render,
//! and a failure is logged once until publishing works again.

use super::Objects;
use super::compact::Meta;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The reason of every Event wasmconfd publishes.
pub const REASON: &str = "WasmconfdSkipped";
/// Most Events published for one render; the rest are in the log.
pub const PER_RENDER: usize = 50;
/// The longest message the API takes (`note`, 1 kB).
const NOTE_LIMIT: usize = 1024;

/// Publishes Events on a task of the async runtime.
#[derive(Clone)]
pub struct Events {
    queue: mpsc::UnboundedSender<(ObjectReference, String)>,
}

impl Events {
    /// Publish through the first of `servers` that takes each Event, on `runtime`.
    pub fn start(servers: Vec<kube::Config>, runtime: &tokio::runtime::Handle) -> Events {
        let (queue, mut queued) = mpsc::unbounded_channel::<(ObjectReference, String)>();
        runtime.spawn(async move {
            let reporter = Reporter::from("wasmconfd");
            let mut recorders: Vec<Option<Recorder>> = servers.iter().map(|_| None).collect();
            let mut failing = false;
            while let Some((reference, note)) = queued.recv().await {
                let event = Event {
                    type_: EventType::Warning,
                    reason: REASON.into(),
                    note: Some(truncate(note)),
                    action: "Route".into(),
                    secondary: None,
                };
                let mut error = None;
                for (server, recorder) in servers.iter().zip(&mut recorders) {
                    let recorder = match recorder {
                        Some(recorder) => recorder,
                        None => match kube::Client::try_from(server.clone()) {
                            Ok(client) => recorder.insert(Recorder::new(client, reporter.clone())),
                            Err(e) => {
                                error = Some(e.to_string());
                                continue;
                            }
                        },
                    };
                    match recorder.publish(&event, &reference).await {
                        Ok(()) => {
                            error = None;
                            break;
                        }
                        Err(e) => error = Some(e.to_string()),
                    }
                }
                match error {
                    Some(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "cannot publish a Kubernetes Event (needs create and patch on events.k8s.io events); the log has every reason");
                    }
                    Some(_) => {}
                    None if failing => {
                        failing = false;
                        tracing::info!("Kubernetes Events are published again");
                    }
                    None => {}
                }
            }
        });
        Events { queue }
    }

    /// Publish a `WasmconfdSkipped` Warning on the object `id` (`Service ns/name`, as a
    /// [`super::Problem`] names it) of `objects`, with `note`. Nothing when it is not there.
    pub fn publish(&self, objects: &Objects, id: &str, note: &str) {
        if let Some(reference) = reference(objects, id) {
            let _ = self.queue.send((reference, note.to_string()));
        }
    }
}

/// `note` cut to what the API takes, at a character boundary.
fn truncate(mut note: String) -> String {
    if note.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// The reference, with its uid (which `kubectl describe` matches), of the object `id` names:
/// `Service ns/name`, `EndpointSlice ns/name`, `Endpoints ns/name` or `Secret ns/name`.
pub fn reference(objects: &Objects, id: &str) -> Option<ObjectReference> {
    let (kind, rest) = id.split_once(' ')?;
    let (namespace, name) = rest.split_once('/')?;
    fn find<'a, T>(
        items: &'a [Arc<T>],
        namespace: &str,
        name: &str,
        meta: fn(&T) -> &Meta,
    ) -> Option<&'a Meta> {
        let named = |m: &&Meta| {
            m.namespace.as_deref() == Some(namespace) && m.name.as_deref() == Some(name)
        };
        items.iter().map(|item| meta(item)).find(named)
    }
    let (api_version, meta) = match kind {
        "Service" => ("v1", find(&objects.services, namespace, name, |s| &s.meta)),
        "EndpointSlice" => (
            "discovery.k8s.io/v1",
            find(&objects.endpoint_slices, namespace, name, |s| &s.meta),
        ),
        "Endpoints" => ("v1", find(&objects.endpoints, namespace, name, |e| &e.meta)),
        "Secret" => {
            let secret = objects.secrets.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(namespace)
                    && s.metadata.name.as_deref() == Some(name)
            });
            return secret.map(|s| s.object_ref(&()));
        }
        _ => return None,
    };
    Some(meta?.reference(api_version, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_names_the_object_it_is_published_on() {
        let text =
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, uid: u-1}\n";
        let (objects, _) = crate::source::parse_snapshot(text).unwrap();
        let found = reference(&objects, "Service shop/web").unwrap();
        assert_eq!(found.uid.as_deref(), Some("u-1"));
        assert_eq!(found.kind.as_deref(), Some("Service"));
        assert_eq!(reference(&objects, "Service shop/other"), None);
        assert_eq!(reference(&objects, "Secret shop/web"), None);
        let long = truncate("é".repeat(1000));
        assert!(long.len() <= NOTE_LIMIT && long.ends_with("..."));
    }
}
