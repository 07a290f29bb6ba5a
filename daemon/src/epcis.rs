//! EPCIS 2.0 events of a shipment, for a sponsor's supply-chain platform: a
//! JSON-LD `EPCISDocument` built from the arrival report's data
//! ([`ReportData`]), so it states the same facts as the report and is the
//! same for the same data.
//!
//! Integrators: `docs/epcis.md` (what each event carries and how to read it).
//! The document is checked against GS1's EPCIS 2.0 JSON Schema in
//! `daemon/tests/report_arrival.rs` (schema vendored in `daemon/tests/epcis/`).
//!
//! # Route
//!
//! `GET /api/v1/shipments/{id}/epcis[?as_of_ms=N]`: `application/ld+json`
//! (served by the HTTP layer, `http/report.rs`).

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::report::{self, ReportData};

/// GS1's published JSON-LD context for EPCIS 2.0.
pub const GS1_CONTEXT: &str = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld";
/// The namespace of Coldchain's own fields and identifiers (`coldchain:din`,
/// `urn:coldchain:device:...`).
pub const NAMESPACE: &str = "urn:coldchain:";

const HOUR_MS: i64 = 3_600_000;

/// The EPCIS document of a shipment's report data.
///
/// Events, in time order (ties in the order listed):
/// * departure: `departing`, `in_transit`, origin and destination;
/// * one per hour with readings: `sensor_reporting`, a `sensorReport` of type
///   `Temperature` with `minValue`, `maxValue`, `meanValue` (the mean of the
///   readings in that hour), `uom` `CEL`;
/// * one per excursion: a `sensorReport` with `exception` `ALARM_CONDITION`,
///   the zone's peak as `value`;
/// * one per stretch of probe faults: `exception` `ERROR_CONDITION`;
/// * one per custody hand-off: `transporting`, the new possessing party;
/// * arrival: `arriving`; the person's disposition: `inspecting`, with
///   `conformant` (accepted), `non_sellable_other` (quarantined) or
///   `non_conformant` (rejected).
///
/// Every event's `eventID` is `ni:///sha-256;` and the hex SHA-256 of the
/// event's canonical JSON without its `eventID` ([`report::canonical_json`]),
/// so the same fact always has the same id and a receiver can dedupe.
pub fn document(d: &ReportData) -> Value {
    let common = common_fields(d);
    let devices = device_ids(d);
    let mut events: Vec<(i64, u8, Value)> = Vec::new();
    let j = &d.journey;
    let place = |s: &str| format!("{NAMESPACE}place:{}", enc(s));

    if let Some(t) = j.departure_ms {
        events.push((
            t,
            0,
            json!({
                "eventTime": time(t),
                "action": "OBSERVE",
                "bizStep": "departing",
                "disposition": "in_transit",
                "sourceList": [{ "type": "location", "source": place(&d.identity.origin) }],
                "destinationList": [{ "type": "location", "destination": place(&d.identity.destination) }],
            }),
        ));
    }

    for (start, end, min, max, mean) in hourly(d) {
        let mut report = json!({
            "type": "Temperature",
            "minValue": celsius(min),
            "maxValue": celsius(max),
            "meanValue": celsius(mean),
            "uom": "CEL",
        });
        let mut meta = json!({ "startTime": time(start), "endTime": time(end) });
        put_device(&mut report, &mut meta, &devices);
        events.push((
            end,
            1,
            json!({
                "eventTime": time(end),
                "action": "OBSERVE",
                "bizStep": "sensor_reporting",
                "disposition": "in_transit",
                "sensorElementList": [{ "sensorMetadata": meta, "sensorReport": [report] }],
            }),
        ));
    }

    for x in &d.temperature.excursions {
        let end = x.end_ms.unwrap_or(x.start_ms + x.duration_ms);
        let mut report = json!({
            "type": "Temperature",
            "exception": "ALARM_CONDITION",
            "time": time(x.start_ms),
            "uom": "CEL",
            "coldchain:zone": x.zone,
            "coldchain:severity": x.severity,
            "coldchain:beyondMs": x.beyond_ms,
            "coldchain:fired": x.fired_ms.is_some(),
        });
        if let Some(p) = x.peak_milli_c {
            report["value"] = celsius(p);
        }
        if let Some(f) = x.fired_ms {
            report["coldchain:firedTime"] = json!(time(f));
        }
        let mut meta = json!({ "startTime": time(x.start_ms), "endTime": time(end) });
        if x.end_ms.is_none() {
            meta["coldchain:ongoing"] = json!(true);
        }
        put_device(&mut report, &mut meta, &devices);
        events.push((
            x.start_ms,
            2,
            json!({
                "eventTime": time(x.start_ms),
                "action": "OBSERVE",
                "bizStep": "sensor_reporting",
                "sensorElementList": [{ "sensorMetadata": meta, "sensorReport": [report] }],
            }),
        ));
    }

    for f in &d.data_health.faults {
        let end = f.end_ms.unwrap_or(f.start_ms + f.duration_ms);
        let mut report = json!({
            "type": "Temperature",
            "exception": "ERROR_CONDITION",
            "time": time(f.start_ms),
            "stringValue": "probe fault",
        });
        let mut meta = json!({ "startTime": time(f.start_ms), "endTime": time(end) });
        put_device(&mut report, &mut meta, &devices);
        events.push((
            f.start_ms,
            3,
            json!({
                "eventTime": time(f.start_ms),
                "action": "OBSERVE",
                "bizStep": "sensor_reporting",
                "sensorElementList": [{ "sensorMetadata": meta, "sensorReport": [report] }],
            }),
        ));
    }

    for h in &j.handoffs {
        events.push((
            h.at_ms,
            4,
            json!({
                "eventTime": time(h.at_ms),
                "action": "OBSERVE",
                "bizStep": "transporting",
                "disposition": "in_transit",
                "bizLocation": { "id": place(&h.location) },
                "destinationList": [{
                    "type": "possessing_party",
                    "destination": format!("{NAMESPACE}party:{}", enc(&h.to)),
                }],
                "coldchain:custodian": h.to,
                "coldchain:location": h.location,
                "coldchain:recordedBy": h.by,
            }),
        ));
    }

    if let Some(t) = j.arrival_ms {
        events.push((
            t,
            5,
            json!({
                "eventTime": time(t),
                "action": "OBSERVE",
                "bizStep": "arriving",
                "disposition": "in_progress",
                "bizLocation": { "id": place(&d.identity.destination) },
            }),
        ));
    }

    if let Some(x) = &d.disposition {
        let disposition = match x.decision.as_str() {
            "accepted" => "conformant",
            "rejected" => "non_conformant",
            _ => "non_sellable_other",
        };
        events.push((
            x.at_ms,
            6,
            json!({
                "eventTime": time(x.at_ms),
                "action": "OBSERVE",
                "bizStep": "inspecting",
                "disposition": disposition,
                "bizLocation": { "id": place(&d.identity.destination) },
                "coldchain:decision": x.decision,
                "coldchain:comment": x.comment,
                "coldchain:decidedBy": x.by,
            }),
        ));
    }

    events.sort_by_key(|(t, rank, _)| (*t, *rank));
    let list: Vec<Value> = events
        .into_iter()
        .map(|(_, _, mut e)| {
            let o = e.as_object_mut().expect("events are objects");
            o.insert("type".into(), json!("ObjectEvent"));
            o.insert("eventTimeZoneOffset".into(), json!("+00:00"));
            for (k, v) in &common {
                o.insert(k.clone(), v.clone());
            }
            let id = event_id(&e);
            e["eventID"] = json!(id);
            e
        })
        .collect();

    json!({
        "@context": [GS1_CONTEXT, { "coldchain": NAMESPACE }],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": time(d.as_of_ms),
        "instanceIdentifier": format!("{}-{}", report::sha256(d), d.as_of_ms),
        "epcisBody": { "eventList": list },
    })
}

/// What every event carries: the shipment as its object, its ISBT 128
/// identifiers, the report the facts come from.
fn common_fields(d: &ReportData) -> Map<String, Value> {
    let id = &d.identity;
    let mut m = Map::new();
    m.insert(
        "epcList".into(),
        json!([format!("{NAMESPACE}shipment:{}", enc(&id.shipment))]),
    );
    m.insert("coldchain:shipment".into(), json!(id.shipment));
    m.insert("coldchain:product".into(), json!(id.product));
    if let Some(din) = &id.din {
        m.insert("coldchain:din".into(), json!(din));
    }
    if let Some(code) = &id.product_code {
        m.insert("coldchain:productCode".into(), json!(code));
    }
    m.insert("coldchain:profile".into(), json!(id.profile));
    m
}

/// The watching probes as device URIs, with their channels.
fn device_ids(d: &ReportData) -> Vec<(String, u8)> {
    d.identity
        .probes
        .iter()
        .map(|p| (format!("{NAMESPACE}device:{}", enc(&p.device)), p.channel))
        .collect()
}

/// The readings are the watching probes' together (the report's series): with
/// one probe its device is the `deviceID`; with several, they are listed in
/// the sensor metadata and no single `deviceID` is claimed.
fn put_device(report: &mut Value, meta: &mut Value, devices: &[(String, u8)]) {
    if let [(dev, ch)] = devices {
        report["deviceID"] = json!(dev);
        report["coldchain:channel"] = json!(ch);
        meta["deviceID"] = json!(dev);
    } else {
        meta["coldchain:probes"] = devices
            .iter()
            .map(|(d, c)| json!({ "deviceID": d, "channel": c }))
            .collect();
    }
}

/// Per clock hour with at least one valid reading: (start, end, min, max,
/// mean), milli-°C; the last hour ends at `as_of_ms`.
fn hourly(d: &ReportData) -> Vec<(i64, i64, i32, i32, i32)> {
    let mut out: Vec<(i64, i64, i32, i32, i32)> = Vec::new();
    let mut cur: Option<(i64, i32, i32, i64, i64)> = None; // hour, min, max, sum, n
    let flush = |c: (i64, i32, i32, i64, i64), out: &mut Vec<_>| {
        let (h, min, max, sum, n) = c;
        let mean = (sum as f64 / n as f64).round() as i32;
        out.push((h, (h + HOUR_MS).min(d.as_of_ms).max(h), min, max, mean));
    };
    for &(t, v) in &d.readings {
        let Some(v) = v else { continue };
        let h = t.div_euclid(HOUR_MS) * HOUR_MS;
        match &mut cur {
            Some(c) if c.0 == h => {
                c.1 = c.1.min(v);
                c.2 = c.2.max(v);
                c.3 += i64::from(v);
                c.4 += 1;
            }
            _ => {
                if let Some(c) = cur.take() {
                    flush(c, &mut out);
                }
                cur = Some((h, v, v, i64::from(v), 1));
            }
        }
    }
    if let Some(c) = cur {
        flush(c, &mut out);
    }
    out
}

/// `ni:///sha-256;HEX` of the event's canonical JSON without `eventID`.
fn event_id(e: &Value) -> String {
    let mut e = e.clone();
    if let Some(o) = e.as_object_mut() {
        o.remove("eventID");
    }
    let h = Sha256::digest(report::canonical_json(&e).as_bytes());
    format!("ni:///sha-256;{}", hex::encode(h))
}

/// milli-°C as a JSON number of °C (exact to the milli-degree).
fn celsius(milli: i32) -> Value {
    // Through the decimal text, so -150.1 is written as -150.1, not as the
    // nearest binary fraction's expansion.
    let text = format!(
        "{}{}.{:03}",
        if milli < 0 { "-" } else { "" },
        milli.unsigned_abs() / 1000,
        milli.unsigned_abs() % 1000
    );
    Value::Number(
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .unwrap_or_else(|| 0.into()),
    )
}

/// RFC 3339 UTC with milliseconds.
fn time(ms: i64) -> String {
    let base = report::text::iso(ms);
    format!("{}.{:03}Z", base.trim_end_matches('Z'), ms.rem_euclid(1000))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_times_and_uris() {
        assert_eq!(celsius(-150_100).to_string(), "-150.1");
        assert_eq!(celsius(-500).to_string(), "-0.5");
        assert_eq!(celsius(8_000).to_string(), "8.0");
        assert_eq!(time(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(enc("FR <7> & co"), "FR%20%3C7%3E%20%26%20co");
    }
}
