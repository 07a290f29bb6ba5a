//! `coldchain run`: wires the tasks together and shuts down cleanly.
//!
//! ```text
//! MQTT event loop ──Job──▶ ingest task ──▶ sled (flush + fsync) ──▶ PUBACK
//!                                 │
//!                         HTTP API reads the store
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use rumqttc::AsyncClient;
use tokio::sync::{mpsc, watch};

use crate::audit::Audit;
use crate::config::Config;
use crate::evaluate::Evaluator;
use crate::forward::Forward;
use crate::ingest::mqtt;
use crate::ingest::serial;
use crate::ingest::{Ack, Ingestor, Job, Outcome, Stats};
use crate::registry::Registry;
use crate::store::{KvStore, Store};

/// Runs the daemon until SIGTERM or SIGINT.
///
/// When retention frees space while intake is paused for storage, intake is
/// stopped cleanly (everything taken is durable and acknowledged), the
/// database is compacted and everything starts again in the same process:
/// sled does not give deleted space back to the file system by itself (see
/// [`crate::store::compact`]).
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    loop {
        match run_once(cfg.clone()).await? {
            Next::Stop => return Ok(()),
            Next::Compact => {
                tracing::info!("intake stopped to compact the database; starting again");
            }
        }
    }
}

/// Why [`run_once`] returned.
enum Next {
    /// SIGTERM or SIGINT.
    Stop,
    /// Retention made room while storage was full: compact, start again.
    Compact,
}

/// Before intake: an interrupted compaction is finished, a retention pass
/// runs (when `store.retention_days` is set), and a database at or over the
/// resume threshold of its budget (90 %) is compacted, so the space
/// retention freed is given back before the budget is checked. Returns the
/// frames retention purged.
fn prepare_store(cfg: &Config, db_dir: &std::path::Path) -> anyhow::Result<u64> {
    let cache = cfg.store.cache_mb * 1024 * 1024;
    crate::store::recover_compaction(db_dir)?;
    let mut purged = 0;
    if cfg.store.retention_days > 0 {
        let store = KvStore::open_waiting(db_dir, cache)
            .with_context(|| format!("opening the database in {}", db_dir.display()))?;
        let shipments = crate::shipment::Shipments::open(store.db())?;
        let audit = Audit::open(store.db()).context("opening the audit trail")?;
        purged =
            crate::retention::run_pass(&store, &shipments, &audit, cfg, crate::ingest::now_ms())
                .context("retention pass at start")?
                .frames;
    }
    let budget = cfg.store.max_disk_mb * 1024 * 1024;
    let size = crate::store::dir_size(db_dir);
    if budget > 0 && size > budget / 10 * 9 {
        tracing::info!(
            size,
            budget,
            "database at or over 90 % of store.max_disk_mb: compacting it (copying its live data into a fresh file)"
        );
        let (before, after) = crate::store::compact(db_dir, cache)?;
        if after < before {
            tracing::info!(before, after, "database compacted");
        } else {
            tracing::warn!(
                size = before,
                "compaction would not make the database smaller (it is live data): kept as it was"
            );
        }
    }
    Ok(purged)
}

async fn run_once(cfg: Config) -> anyhow::Result<Next> {
    let db_dir = cfg.daemon.data_dir.join("db");
    // sled's start-up care (finishing a compaction, retention, compacting
    // over budget); on PostgreSQL retention runs hourly like on sled and the
    // database is maintained by its own tools.
    let purged = match cfg.store.postgres_url {
        None => {
            let (cfg, dir) = (cfg.clone(), db_dir.clone());
            tokio::task::spawn_blocking(move || prepare_store(&cfg, &dir)).await??
        }
        Some(_) => 0,
    };
    let store = Arc::new({
        let c = cfg.clone();
        tokio::task::spawn_blocking(move || KvStore::open_configured(&c))
            .await?
            .with_context(|| match &cfg.store.postgres_url {
                Some(url) => format!(
                    "opening the database at {} (key store.postgres_url)",
                    crate::kv::pg_display_url(url)
                ),
                None => format!("opening the database in {}", db_dir.display()),
            })?
    });
    let registry =
        Registry::open(cfg.devices()?, store.db()).context("loading the device registry")?;
    let stats = Arc::new(Stats::default());
    stats
        .retention_purged_frames
        .store(purged, Ordering::Relaxed);
    tracing::info!(
        data_dir = %cfg.daemon.data_dir.display(),
        devices = registry.ids().len(),
        "coldchain daemon starting"
    );

    // HTTP API.
    let listener = tokio::net::TcpListener::bind(cfg.http.bind)
        .await
        .with_context(|| format!("key http.bind: cannot listen on {}", cfg.http.bind))?;
    let local = listener.local_addr()?;
    let tls = match (&cfg.http.tls_cert, &cfg.http.tls_key) {
        (Some(cert), Some(key)) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "keys http.tls_cert / http.tls_key: cannot load {} / {} (PEM certificate chain and private key)",
                        cert.display(),
                        key.display()
                    )
                })?,
        ),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("HTTP API on {scheme}://{local}/");
    if tls.is_none() && !cfg.http.bind.ip().is_loopback() {
        tracing::warn!(bind = %cfg.http.bind, "serving plain HTTP beyond loopback (http.allow_plain_http = true): passwords and sessions cross the network in clear");
    }
    let (stop_tx, stop_rx) = watch::channel(false);

    // Evaluation, alerts and their delivery.
    let audit = Arc::new(Audit::open(store.db()).context("opening the audit trail")?);
    record_config(&audit, &cfg)?;
    let forward = Forward::open(store.db(), cfg.upstream_prefix())?;
    let summaries = crate::evaluate::Summaries::default();
    // This process among the daemons that may share the database: it names
    // the frames it stores and the evaluation leases it holds.
    let instance = format!("{}-{:08x}", cfg.daemon.id, rand::random::<u32>());
    tracing::info!(%instance, "instance name (evaluation leases, outbox claims)");
    store.set_instance(instance.clone());
    let evaluator = Evaluator::new(cfg.clone(), store.clone(), audit.clone(), forward.clone())?
        .with_summaries(summaries.clone())
        .with_leases(crate::lease::Leases::open(store.db(), instance.clone())?);
    let leases = evaluator.leases().clone();
    let stale = evaluator.stale_flag();
    let reader = Arc::new(
        Evaluator::new(cfg.clone(), store.clone(), audit.clone(), forward.clone())?
            .with_summaries(summaries),
    );
    // Shipment records from other sites: from the centre's broker at a
    // gateway, from gateways at a centre (crate::sites).
    let (records_tx, records_rx) = mpsc::unbounded_channel::<crate::sites::Incoming>();
    let sites = crate::sites::Sites::new(
        cfg.clone(),
        audit.clone(),
        forward.clone(),
        evaluator.outbox.clone(),
    );
    let paths = crate::sites::Paths::open(store.db())?.per_frame(cfg.centre.is_some());
    if let Some(c) = &cfg.centre {
        tracing::info!(group = %c.group, edges = %c.edges, "centre: taking what gateways forward");
    }
    let forwarder = cfg.upstream.clone().map(|up| {
        tracing::info!(upstream = %format!("{}:{}", up.host, up.port), backlog = forward.depth().map_or_else(|e| format!("unknown ({e})"), |n| n.to_string()), "forwarding to the centre");
        tokio::spawn(crate::forward::run(
            up,
            format!("{}-up", cfg.client_id()),
            forward.clone(),
            records_tx.clone(),
            stop_rx.clone(),
        ))
    });
    // Claims its deliveries under the same name as its leases.
    let outbox = evaluator.outbox.clone().with_owner(instance.clone());
    let compact = Arc::new(tokio::sync::Notify::new());
    let retention = (cfg.store.retention_days > 0).then(|| {
        tokio::spawn(crate::retention::task(
            store.clone(),
            evaluator.shipments.clone(),
            audit.clone(),
            cfg.clone(),
            stats.clone(),
            compact.clone(),
            stop_rx.clone(),
        ))
    });
    let (touched_tx, touched_rx) = mpsc::unbounded_channel::<crate::evaluate::Touched>();
    let (req_tx, req_rx) = mpsc::channel(64);
    // On PostgreSQL, frames other instances store reach this evaluator too
    // (for the shipments whose lease it holds).
    let notes = cfg.store.postgres_url.clone().map(|url| {
        let (tx, again) = (touched_tx.clone(), touched_tx.clone());
        let me = instance.clone();
        tokio::spawn(crate::kv::pg_listen(
            url,
            "coldchain_frames",
            move || {
                // Whatever was announced while disconnected is unknown:
                // every tracker starts again from the store.
                stale.store(true, Ordering::Relaxed);
                let _ = again.send(crate::evaluate::Touched::new());
            },
            move |payload| match serde_json::from_str::<crate::store::FrameNote>(&payload) {
                Ok(note) if note.from != me => {
                    let mut t = crate::evaluate::Touched::new();
                    for (d, boot, seq) in note.frames {
                        t.entry(d)
                            .or_default()
                            .push(coldchain_proto::FrameRef { boot, seq });
                    }
                    let _ = tx.send(t);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("unreadable frame notification: {e}"),
            },
        ))
    });
    let eval_task = tokio::spawn(crate::evaluate::run_task(
        evaluator,
        store.clone(),
        touched_rx,
        req_rx,
        Duration::from_secs(cfg.alerts.evaluate_every_s),
        stop_rx.clone(),
        crate::sites::Inbox {
            sites,
            records: records_rx,
        },
    ));
    let out_mqtt = tokio::spawn(crate::outbox::run_mqtt(
        cfg.clone(),
        outbox.clone(),
        stop_rx.clone(),
    ));
    let out_hooks = tokio::spawn(crate::outbox::run_webhooks(
        cfg.webhooks.clone(),
        outbox,
        stop_rx.clone(),
    ));

    let users = Arc::new(
        crate::users::Users::open(store.db(), cfg.http.lockout_after, cfg.http.session_idle_s)
            .context("opening the accounts")?,
    );
    // Expired dashboard sessions are removed when read and by this sweep
    // (sessions nobody comes back to). Every instance sweeps; on a shared
    // database removing a session twice is harmless.
    {
        let (users, mut stop) = (users.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return; },
                }
                let u = users.clone();
                let now = crate::ingest::now_ms();
                match tokio::task::spawn_blocking(move || u.purge_expired_sessions(now)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::debug!("{n} expired dashboard session(s) removed"),
                    Ok(Err(e)) => tracing::warn!("sweeping expired sessions: {e:#}"),
                    Err(e) => tracing::warn!("sweeping expired sessions: {e}"),
                }
            }
        });
    }
    if cfg.http.token.is_some() {
        tracing::warn!(
            "http.token is set: the legacy shared token is accepted as the audited admin identity `legacy-token`; move scripts to personal tokens (`coldchain token create`) and remove it"
        );
    }
    let app = crate::http::router(crate::http::AppState {
        store: store.clone(),
        stats: stats.clone(),
        registry: registry.clone(),
        reader,
        requests: req_tx,
        audit,
        users,
        legacy_token: cfg.http.token.clone(),
        anonymous_reads: cfg.http.anonymous_reads(),
        tls: tls.is_some(),
    });
    let (disc_tx, disc_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = match tls {
        None => tokio::spawn(async move {
            let r = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!("HTTP server: {e}");
            }
        }),
        Some(tls) => {
            // Certificate and key are read again on SIGHUP (a renewed
            // certificate is served without a restart).
            let (cert, key) = (
                cfg.http.tls_cert.clone().unwrap_or_default(),
                cfg.http.tls_key.clone().unwrap_or_default(),
            );
            let reload = tls.clone();
            let mut reload_stop = stop_rx.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let Ok(mut hup) = signal(SignalKind::hangup()) else {
                    tracing::error!("cannot listen for SIGHUP: the certificate is not reloaded");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = hup.recv() => match reload.reload_from_pem_file(&cert, &key).await {
                            Ok(()) => tracing::info!(cert = %cert.display(), "SIGHUP: TLS certificate and key reloaded"),
                            Err(e) => tracing::error!(cert = %cert.display(), key = %key.display(), "SIGHUP: cannot reload the TLS certificate, still serving the previous one: {e}"),
                        },
                        r = reload_stop.changed() => if r.is_err() || *reload_stop.borrow() { return },
                    }
                }
            });
            let handle = axum_server::Handle::new();
            let h2 = handle.clone();
            tokio::spawn(async move {
                let _ = http_stop.wait_for(|s| *s).await;
                h2.graceful_shutdown(Some(Duration::from_secs(5)));
            });
            let std_listener = listener.into_std()?;
            let server = axum_server::from_tcp_rustls(std_listener, tls)?.handle(handle);
            tokio::spawn(async move {
                if let Err(e) = server.serve(app.into_make_service()).await {
                    tracing::error!("HTTPS server: {e}");
                }
            })
        }
    };

    // MQTT.
    let (client, eventloop) = mqtt::connect(&cfg)?;
    let (tx, rx) = mpsc::channel::<Job>(cfg.store.queue);
    let pump = tokio::spawn(mqtt::pump(
        cfg.clone(),
        client.clone(),
        eventloop,
        mqtt::Sinks {
            jobs: tx.clone(),
            records: records_tx,
        },
        stop_rx.clone(),
        disc_rx,
        stats.clone(),
    ));

    // A centre says when its subscriptions are in place (crate::sites).
    let ready = cfg.centre.as_ref().map(|c| {
        tokio::spawn(crate::sites::announce_ready(
            client.clone(),
            c.group.clone(),
            stats.clone(),
            stop_rx.clone(),
        ))
    });

    // Serial ports: one thread each.
    let mut serial_threads = Vec::new();
    for port in cfg.serial.clone() {
        let (tx, stop, st) = (tx.clone(), stop_rx.clone(), stats.clone());
        serial_threads.push(std::thread::spawn(move || {
            serial::run_port(port, tx, stop, st)
        }));
    }
    // Kept to read the queue depth for the watchdog; dropped at shutdown.
    let probe = tx;

    // Time and settings for every registered device, retained on its down topic.
    let sync = tokio::spawn(mqtt::publish_sync(
        client.clone(),
        registry.clone(),
        Duration::from_secs(cfg.daemon.time_refresh_s),
        stop_rx.clone(),
    ));

    // Ingest.
    let ingestor = Ingestor::new(store.clone(), registry.clone(), stats.clone());
    let max_batch = cfg.store.max_batch;
    let forward_ingest = forward.clone();
    let runtime = tokio::runtime::Handle::current();
    let budget_bytes = cfg.store.max_disk_mb * 1024 * 1024;
    let ingest = tokio::task::spawn_blocking(move || {
        ingest_loop(
            ingestor,
            rx,
            Outlets {
                client,
                registry,
                touched: touched_tx,
                forward: forward_ingest,
                runtime,
                paths,
                centre: cfg.centre.clone(),
            },
            max_batch,
            budget_bytes,
        )
    });

    // systemd: ready now; the watchdog is fed only while ingest makes progress
    // (or has nothing to do) and the HTTP API answers.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        let (stats, probe) = (stats.clone(), probe.clone());
        let mut stop = stop_rx.clone();
        let api = local;
        tokio::spawn(async move {
            let mut last_commits = u64::MAX;
            let mut tick = tokio::time::interval(period / 3);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return; },
                }
                let commits = stats.commits.load(Ordering::Relaxed);
                let queued = probe.max_capacity() - probe.capacity();
                let ingest_ok = queued == 0 || commits != last_commits;
                last_commits = commits;
                let api_ok = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(api),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if ingest_ok && api_ok {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    tracing::error!(
                        queued,
                        ingest_ok,
                        api_ok,
                        "not feeding the systemd watchdog: the daemon is stuck"
                    );
                }
            }
        })
    });

    let next = tokio::select! {
        () = shutdown_signal() => Next::Stop,
        () = compact.notified() => Next::Compact,
    };
    tracing::info!("shutting down: stopping intake, flushing, acknowledging");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    drop(probe);
    if let Some(w) = watchdog {
        let _ = w.await;
    }
    // The ingest loop ends when the pump and the serial threads drop their senders.
    for t in serial_threads {
        let _ = t.join();
    }
    let _ = sync.await;
    if let Some(r) = ready {
        let _ = r.await;
    }
    let ingest_result = match ingest.await {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("ingest task failed: {e}")),
    };
    let _ = disc_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), pump).await;
    let _ = http.await;
    let _ = eval_task.await;
    if let Some(l) = notes {
        l.abort();
    }
    // Another instance takes this one's shipments at once.
    leases.release_all();
    if let Some(r) = retention {
        // A pass in progress finishes its batch of removals; nothing it
        // removes is needed, so waiting for all of it is not required.
        let _ = tokio::time::timeout(Duration::from_secs(10), r).await;
    }
    if let Some(f) = forwarder {
        let _ = tokio::time::timeout(Duration::from_secs(3), f).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), out_mqtt).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), out_hooks).await;
    store.sync().context("final flush")?;
    tracing::info!(
        frames = stats.frames_stored.load(Ordering::Relaxed),
        readings = stats.readings_stored.load(Ordering::Relaxed),
        "stopped"
    );
    ingest_result.map(|()| next)
}

/// How often a device docked on a serial port is sent the time again.
const SERIAL_SYNC_EVERY: Duration = Duration::from_secs(600);

/// Receives jobs, processes them in groups, commits each group with one
/// flush + fsync, then acknowledges the group. Runs on a blocking thread:
/// sled and fsync block.
fn ingest_loop(
    mut ing: Ingestor<KvStore>,
    mut rx: mpsc::Receiver<Job>,
    out: Outlets,
    max_batch: usize,
    budget_bytes: u64,
) -> anyhow::Result<()> {
    let Outlets {
        client,
        registry,
        touched,
        forward,
        runtime,
        paths,
        centre,
    } = out;
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let mut path_batch = crate::sites::PathBatch::default();
    let mut outcomes = Vec::with_capacity(max_batch);
    let budget = budget_bytes;
    let db_path = ing.store().path().to_path_buf();
    let mut last_size_check = std::time::Instant::now() - Duration::from_secs(10);
    let mut full = false;
    // Per (device, boot): a device that rebooted is sent the time at once.
    let mut serial_synced: HashMap<(coldchain_proto::DeviceId, u32), std::time::Instant> =
        HashMap::new();
    // Space was made (or the budget lifted) while the daemon was down: the
    // episode recorded before ends now.
    if budget == 0 || crate::store::dir_size(&db_path) <= budget {
        ing.store().storage_full_end(crate::ingest::now_ms())?;
    }
    while let Some(first) = rx.blocking_recv() {
        // Disk budget: over it, take nothing new (nothing is acknowledged, so
        // nothing is lost: the broker and the devices keep it) until space is made.
        if budget > 0 && (full || last_size_check.elapsed() >= Duration::from_secs(1)) {
            last_size_check = std::time::Instant::now();
            let size = crate::store::dir_size(&db_path);
            if size > budget {
                if !full {
                    tracing::error!(
                        size,
                        budget,
                        "STORAGE FULL: the database is over store.max_disk_mb; intake paused, nothing acknowledged until space is made"
                    );
                    ing.stats().storage_full.store(1, Ordering::Relaxed);
                    // Raises the storage-full alert on every shipment in transit.
                    ing.store().storage_full_begin(crate::ingest::now_ms())?;
                    let _ = touched.send(crate::evaluate::Touched::new());
                }
                full = true;
                std::thread::sleep(Duration::from_secs(1));
            } else if full && size <= budget / 10 * 9 {
                tracing::info!(size, budget, "storage back under budget: intake resumed");
                ing.stats().storage_full.store(0, Ordering::Relaxed);
                ing.store().storage_full_end(crate::ingest::now_ms())?;
                let _ = touched.send(crate::evaluate::Touched::new());
                full = false;
            }
        }
        batch.push(first);
        if full {
            // Hold this one, and wait: the channel fills and the broker stops sending.
            while full {
                if rx.is_closed() {
                    // Shutting down: what is held was never acknowledged;
                    // the broker delivers it again next time.
                    return Ok(());
                }
                std::thread::sleep(Duration::from_secs(1));
                let size = crate::store::dir_size(&db_path);
                // Resume below 90 % of the budget, so intake does not flap at the limit.
                if size <= budget / 10 * 9 {
                    tracing::info!(size, budget, "storage back under budget: intake resumed");
                    ing.stats().storage_full.store(0, Ordering::Relaxed);
                    ing.store().storage_full_end(crate::ingest::now_ms())?;
                    let _ = touched.send(crate::evaluate::Touched::new());
                    full = false;
                }
            }
        }
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        for job in &batch {
            let outcome = ing.process(&job.inbound)?;
            // Queued for the centre before the commit, so it is durable
            // exactly when the frame is. Duplicates are queued again: after a
            // crash between a frame's write and its queue entry, the broker's
            // redelivery is the frame's only way out (the centre dedupes).
            if forward.enabled()
                && let Outcome::Stored { device, .. } | Outcome::Duplicate { device, .. } = &outcome
            {
                let tail = match job.inbound.via {
                    crate::store::Via::MqttJson => format!("dev/{device}/up/json"),
                    crate::store::Via::Mqtt | crate::store::Via::Serial => {
                        format!("dev/{device}/up")
                    }
                };
                forward.push(&tail, job.inbound.payload.clone(), false)?;
            }
            // Which way it came (a gateway, direct, serial), written before
            // the commit like the frame (crate::sites).
            let path = crate::sites::label(centre.as_ref(), &job.inbound);
            match &outcome {
                Outcome::Stored { device, stored, .. }
                | Outcome::Duplicate { device, stored, .. } => {
                    paths.note(
                        &mut path_batch,
                        device,
                        *stored,
                        &path,
                        crate::sites::frame_time(&job.inbound),
                        matches!(outcome, Outcome::Stored { .. }),
                    )?;
                }
                Outcome::Rejected(r) => {
                    if path != crate::sites::DIRECT && path != crate::sites::SERIAL {
                        tracing::warn!(gateway = %path, source = %job.inbound.source, reason = r.reason(),
                            "security: a frame forwarded by gateway {path} was refused ({})", r.reason());
                    }
                    paths.refused(&path, r.reason(), r.security_device(), &job.inbound)?;
                }
            }
            outcomes.push(outcome);
        }
        paths.flush(&mut path_batch)?;
        let mut attempt = 0u32;
        loop {
            match ing.commit() {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::error!("commit failed (attempt {attempt}), nothing acknowledged: {e}");
                    std::thread::sleep(Duration::from_millis(200 << attempt));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot make data durable, exiting without acknowledging: {e}"
                    ));
                }
            }
        }
        forward.wake();
        let mut devices = crate::evaluate::Touched::new();
        for o in &outcomes {
            match o {
                // The evaluator reads the frame where it is stored (after a
                // re-enrollment, under the shifted boot), not by the device's
                // own numbering.
                Outcome::Stored { device, stored, .. } => {
                    devices.entry(device.to_string()).or_default().push(*stored)
                }
                // A security event is evaluated now too (the tamper alarm).
                Outcome::Rejected(r) => {
                    if let Some(d) = r.security_device() {
                        devices.entry(d.to_string()).or_default();
                    }
                }
                Outcome::Duplicate { .. } => {}
            }
        }
        if !devices.is_empty() {
            let _ = touched.send(devices);
        }
        for (job, outcome) in batch.drain(..).zip(outcomes.drain(..)) {
            match job.ack {
                // Rejected messages are acknowledged too: they are counted (and
                // security events recorded) durably; a redelivery would not
                // change the verdict.
                // Waits for room in the request channel rather than dropping
                // the PUBACK: the MQTT task never blocks on the ingest queue,
                // so the event loop keeps draining it.
                Ack::Mqtt(publish) => match runtime.block_on(client.ack(&publish)) {
                    Ok(()) => {
                        ing.stats().acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => tracing::warn!(
                        "cannot queue PUBACK (the broker will resend; dedupe absorbs it): {e}"
                    ),
                },
                Ack::Serial(reply) => {
                    let fref = coldchain_proto::codec::decode_unverified::<coldchain_proto::Frame>(
                        &job.inbound.payload,
                    )
                    .ok()
                    .map(|(f, _, _)| f.frame_ref());
                    if let Some(bytes) = outcome.serial_reply(&registry, fref) {
                        // A closed port drops the reply: the device resends.
                        if reply.send(bytes).is_ok() {
                            ing.stats().acked.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // The time and settings, after the first ack to a device
                    // (and boot) and then every SERIAL_SYNC_EVERY: a logger
                    // that only ever talks over serial learns the time this way.
                    if let Outcome::Stored { device, frame, .. }
                    | Outcome::Duplicate { device, frame, .. } = &outcome
                        && serial_synced
                            .get(&(device.clone(), frame.boot))
                            .is_none_or(|t| t.elapsed() >= SERIAL_SYNC_EVERY)
                        && let Some(dev) = registry.get(device)
                    {
                        let now = crate::ingest::now_ms().max(0) as u64;
                        let msg = crate::ingest::sync_message(&dev, now);
                        if let Some(line) = crate::ingest::serial_line(&registry, device, &msg)
                            && reply.send(line).is_ok()
                        {
                            if serial_synced.len() >= 4096 {
                                serial_synced.clear();
                            }
                            serial_synced
                                .insert((device.clone(), frame.boot), std::time::Instant::now());
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Where the ingest loop's results go: acks, evaluation, forwarding.
struct Outlets {
    /// To PUBACK MQTT messages.
    client: AsyncClient,
    /// To sign serial acks.
    registry: Registry,
    /// Devices with new data, for the evaluator.
    touched: mpsc::UnboundedSender<crate::evaluate::Touched>,
    /// The queue to the centre.
    forward: Forward,
    /// To wait for room for a PUBACK from this blocking thread.
    runtime: tokio::runtime::Handle,
    /// Which way each frame came (crate::sites).
    paths: crate::sites::Paths,
    /// The centre's topics, when this daemon is a centre.
    centre: Option<crate::config::Centre>,
}

/// Appends a `config.load` entry to the audit trail when the configuration
/// differs from the one the daemon last ran with (configuration changes are
/// part of the 21 CFR 11.10(e) trail; the file itself is edited outside).
fn record_config(audit: &Audit, cfg: &Config) -> anyhow::Result<()> {
    let Some(sha) = &cfg.source_sha256 else {
        return Ok(());
    };
    let last = audit
        .list(0, usize::MAX)?
        .into_iter()
        .rev()
        .find(|e| e.action == "config.load")
        .and_then(|e| e.details["sha256"].as_str().map(str::to_string));
    if last.as_deref() != Some(sha.as_str()) {
        let devices: Vec<String> = cfg.devices.iter().map(|d| d.id.clone()).collect();
        audit.append(
            crate::ingest::now_ms(),
            "daemon",
            "config.load",
            "config",
            serde_json::json!({
                "sha256": sha,
                "previous_sha256": last,
                "devices": devices,
                "webhooks": cfg.webhooks.len(),
                "upstream": cfg.upstream.as_ref().map(|u| format!("{}:{}", u.host, u.port)),
                "profiles": cfg.profiles.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            }),
        )?;
    }
    Ok(())
}
