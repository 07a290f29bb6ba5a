//! `/metrics`: the Prometheus exposition, through `prometheus-client`.
//!
//! Two kinds of metric:
//!
//! * Values the daemon already keeps (the ingest counters, `Stats::metrics`, the
//!   database size, open alerts, device presence) are read at scrape time by
//!   [`Snapshot`], a `prometheus-client` collector: nothing is counted twice.
//! * Timings are histograms recorded where they happen ([`timings`]):
//!   - `coldchain_ingest_publish_to_durable_seconds`: from the device's own
//!     time for its newest reading in a frame (device wall clock, so only for
//!     frames stamped with a synced clock) to the end of the group commit that
//!     made the frame durable. MQTT 3.1.1 carries no publish time, so the
//!     device clock stands in for it: a device clock that is off shifts this.
//!   - `coldchain_ingest_receive_to_durable_seconds`: from the daemon
//!     receiving a message to the end of the group commit (the daemon's clock
//!     only; every stored frame).
//!   - `coldchain_ingest_commit_seconds`: one group commit, sled flush + fsync.
//!   - `coldchain_evaluate_shipment_seconds`: evaluating one shipment.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The daemon's timing histograms (one set per process).
#[derive(Debug)]
pub struct Timings {
    /// Device time of a frame's newest reading to durable, seconds.
    pub publish_to_durable: Histogram,
    /// Receive to durable, seconds.
    pub receive_to_durable: Histogram,
    /// Group commit (flush + fsync), seconds.
    pub commit: Histogram,
    /// Evaluation of one shipment, seconds.
    pub evaluate_shipment: Histogram,
}

/// 0.1 ms to about 6.5 s: a commit is well under a millisecond on a quiet
/// SSD, a drain's latency can reach seconds.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 17)
}

static TIMINGS: LazyLock<Timings> = LazyLock::new(|| Timings {
    publish_to_durable: Histogram::new(latency_buckets()),
    receive_to_durable: Histogram::new(latency_buckets()),
    commit: Histogram::new(latency_buckets()),
    evaluate_shipment: Histogram::new(latency_buckets()),
});

/// The process's timing histograms.
pub fn timings() -> &'static Timings {
    &TIMINGS
}

/// Records a duration given in milliseconds (clamped at zero: clocks differ).
pub fn observe_ms(h: &Histogram, ms: i64) {
    h.observe(ms.max(0) as f64 / 1000.0);
}

/// Records `d`.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}

/// Gauge values by one label's value.
pub type Labelled = Vec<(String, i64)>;

/// Values read at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Counters: (name without `_total`, help, value).
    pub counters: Vec<(&'static str, &'static str, u64)>,
    /// Rejections by reason.
    pub rejected: Vec<(&'static str, u64)>,
    /// Gauges without labels: (name, help, value).
    pub gauges: Vec<(&'static str, &'static str, i64)>,
    /// Open alerts by severity.
    pub open_alerts: Labelled,
    /// Last heard from, Unix seconds, per device.
    pub last_seen: Labelled,
    /// Presence per device (1 online).
    pub online: Labelled,
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (name, help, v) in &self.counters {
            let c = ConstCounter::new(*v);
            c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        let mut fam = enc.encode_descriptor(
            "coldchain_rejected",
            "Messages rejected since start, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, v) in &self.rejected {
            ConstCounter::new(*v).encode(fam.encode_family(&[("reason", *reason)])?)?;
        }
        for (name, help, v) in &self.gauges {
            let g = ConstGauge::new(*v);
            g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let labelled: [(&str, &str, &str, &Labelled); 3] = [
            (
                "coldchain_open_alerts",
                "Alerts not yet resolved, by severity",
                "severity",
                &self.open_alerts,
            ),
            (
                "coldchain_device_last_seen_seconds",
                "Unix time a device was last heard from",
                "device",
                &self.last_seen,
            ),
            (
                "coldchain_device_online",
                "1 while a device's retained online topic says online, 0 after its last will",
                "device",
                &self.online,
            ),
        ];
        for (name, help, label, values) in labelled {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (l, v) in values {
                ConstGauge::new(*v).encode(fam.encode_family(&[(label, l.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// The exposition text: `snapshot` and the timing histograms.
pub fn render(snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    let mut r = Registry::default();
    r.register_collector(Box::new(snapshot));
    let t = timings();
    r.register(
        "coldchain_ingest_publish_to_durable_seconds",
        "Device time of a frame's newest reading (synced device clock) to its group commit, seconds",
        t.publish_to_durable.clone(),
    );
    r.register(
        "coldchain_ingest_receive_to_durable_seconds",
        "Message received by the daemon to its group commit, seconds",
        t.receive_to_durable.clone(),
    );
    r.register(
        "coldchain_ingest_commit_seconds",
        "One group commit (sled flush + fsync), seconds",
        t.commit.clone(),
    );
    r.register(
        "coldchain_evaluate_shipment_seconds",
        "Evaluating one shipment, seconds",
        t.evaluate_shipment.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &r)?;
    Ok(out)
}
