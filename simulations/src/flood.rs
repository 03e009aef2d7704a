//! An honest requester's round trip while a peer it does not trust floods the
//! workers with adverts: the job mesh of [`crate::jobs`], plus a flooder (a
//! bare network peer with its own key) that advertises new jobs of the same
//! workflow at the highest priority, at a fixed rate, and holds every offer a
//! worker makes without ever answering it (a slot squatter). The honest
//! round trip is measured before the flood and during it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use oda_node::identity::NodeKey;
use oda_node::network::{self, NetworkConfig, NetworkEvent};
use oda_node::store::{Store, StoreConfig};
use oda_protocol::messages::{Gossip, JobAdvert, JobRequest};
use oda_protocol::names::Topic;
use tokio_util::sync::CancellationToken;

use crate::jobs::{touch_expression, JobMesh};
use crate::mesh::{eventually, loopback};
use crate::stats::Latency;

/// Figures of the flood benchmark.
#[derive(Debug, Clone)]
pub struct Flood {
    /// The honest round trip before the flood.
    pub quiet: Latency,
    /// The honest round trip during the flood.
    pub flooded: Latency,
    /// Adverts the flooder published.
    pub adverts: u64,
    /// Offers the flooder received (and never answered).
    pub offers_held: u64,
    /// The flood's rate, adverts per second.
    pub rate: u64,
    /// How long the flood ran, s.
    pub flood_secs: f64,
}

/// `jobs` sequential honest jobs without, then with, a flooder sending
/// `rate` adverts a second.
pub async fn measure(workers: usize, jobs: usize, rate: u64) -> anyhow::Result<Flood> {
    let mesh = JobMesh::start("flood", workers).await?;
    let mut n = mesh.warm_up(3_000_000).await?;
    let mut quiet = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        quiet.push(mesh.run_one(n, Duration::from_secs(60)).await?);
        n += 1;
    }

    // The flooder: its own key, joined through the bootstrap.
    let dir = tempfile::tempdir().context("temp dir")?;
    let key = NodeKey::generate();
    let (store, _) = Store::open(StoreConfig::new(dir.path().join("store"), 1 << 30))
        .context("the flooder's store")?;
    let boot = mesh.boot_addrs().await?;
    let mut cfg = NetworkConfig::new(mesh.net.clone(), vec![loopback()]);
    cfg.peers = boot;
    let (client, inbox, event_loop) =
        network::new(&key, cfg, store).context("the flooder's network")?;
    let stop = CancellationToken::new();
    tokio::spawn(event_loop.run(stop.clone()));
    let offers_held = Arc::new(AtomicU64::new(0));
    let held = offers_held.clone();
    let mut control = inbox.control;
    // Every offer is held unanswered (the worst case for the worker: it
    // waits for the answer instead of seeing the request fail).
    let holder = tokio::spawn(async move {
        let mut replies = Vec::new();
        while let Some(event) = control.recv().await {
            if let NetworkEvent::JobRequest {
                request: JobRequest::Offer(_),
                reply,
                ..
            } = event
            {
                held.fetch_add(1, Ordering::Relaxed);
                replies.push(reply);
            }
        }
    });
    let mut gossip = inbox.gossip;
    tokio::spawn(async move { while gossip.recv().await.is_some() {} });

    let (wf, bundle) = mesh
        .requester
        .store
        .workflow(&mesh.workflow)?
        .context("the requester lost the workflow")?;
    let template = JobAdvert {
        expr: mesh.expression(0)?,
        inputs: vec![],
        requester: key.public(),
        requirements: wf.manifest.resources.clone(),
        deadline: 0,
        priority: 255,
        token: None,
        bundle,
        endorsements: vec![],
    };
    let published = Arc::new(AtomicU64::new(0));
    let flooder = {
        let (client, published, stop) = (client.clone(), published.clone(), stop.clone());
        let secret = key.secret.clone();
        let (workflow, manifest) = (mesh.workflow, mesh.manifest()?);
        tokio::spawn(async move {
            let topic = Topic::jobs(&template.expr.workflow);
            let every = Duration::from_millis(10);
            let per_tick = (rate / 100).max(1);
            let mut tick = tokio::time::interval(every);
            let mut i = 0i64;
            while !stop.is_cancelled() {
                tick.tick().await;
                for _ in 0..per_tick {
                    i += 1;
                    let Ok(expr) = touch_expression(workflow, &manifest, 10_000_000 + i) else {
                        return;
                    };
                    let advert = JobAdvert {
                        expr,
                        deadline: oda_node::scheduler::jobs::now_ms() + 60_000,
                        ..template.clone()
                    };
                    // Validly signed: the flooder is a peer with its own key.
                    let Ok(signed) = secret.sign(advert) else {
                        return;
                    };
                    if client
                        .publish(topic.clone(), Gossip::JobAdvert(Box::new(signed)))
                        .await
                        .is_ok()
                    {
                        published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let started = Instant::now();
    // The flood is on once the workers hold the flooder's offers.
    let held = offers_held.clone();
    eventually(
        "the workers offer to the flooder",
        Duration::from_secs(60),
        || {
            let held = held.clone();
            async move { (held.load(Ordering::Relaxed) > 0).then_some(()) }
        },
    )
    .await?;
    let mut flooded = Vec::with_capacity(jobs);
    for _ in 0..jobs {
        flooded.push(mesh.run_one(n, Duration::from_secs(120)).await?);
        n += 1;
    }
    let flood_secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = flooder.await;
    holder.abort();
    let none = || anyhow::anyhow!("no samples");
    Ok(Flood {
        quiet: Latency::of(&quiet).ok_or_else(none)?,
        flooded: Latency::of(&flooded).ok_or_else(none)?,
        adverts: published.load(Ordering::Relaxed),
        offers_held: offers_held.load(Ordering::Relaxed),
        rate,
        flood_secs,
    })
}
