//! Shipments: what travels, what watches it, where it is in its lifecycle.
//!
//! `planned -> in_transit -> arrived -> closed`. At close a person records the
//! disposition (accepted, quarantined, rejected) with a comment: the software
//! states the evidence and never decides. Every change is written to the audit
//! trail by the daemon, with who and when. This module is the lifecycle as
//! pure functions; the daemon stores shipments (`coldchain_daemon::shipment`).

use crate::isbt128;
use serde::{Deserialize, Serialize};

/// Lifecycle state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Created, not yet left.
    Planned,
    /// On its way.
    InTransit,
    /// At the destination, disposition pending.
    Arrived,
    /// Disposition recorded.
    Closed,
}

/// A receiving lab's decision.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Accepted for use.
    Accepted,
    /// Held pending investigation.
    Quarantined,
    /// Not to be used.
    Rejected,
}

/// The disposition recorded at close.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disposition {
    /// The decision.
    pub decision: Decision,
    /// The person's comment.
    pub comment: String,
    /// Who decided.
    pub by: String,
    /// When, ms.
    pub at_ms: i64,
    /// The electronic signature (absent in dispositions recorded before
    /// signatures existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// An electronic signature (21 CFR 11.50, 11.70, 11.200): who signed, when,
/// what it means, and the SHA-256 of the arrival report it covers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// The signer's user id.
    pub user: String,
    /// The signer's full name.
    pub full_name: String,
    /// When, ms.
    pub signed_ms: i64,
    /// The meaning: `released for use`, `quarantined`, `rejected`.
    pub meaning: String,
    /// SHA-256 of the report's content it covers (the report data without
    /// its disposition, see `report::content_sha256` in the daemon).
    pub report_sha256: String,
    /// How the signer proved who they were: `password re-entered`.
    pub authentication: String,
}

impl Decision {
    /// The meaning of a signature with this decision.
    pub fn meaning(self) -> &'static str {
        match self {
            Decision::Accepted => "released for use",
            Decision::Quarantined => "quarantined",
            Decision::Rejected => "rejected",
        }
    }
}

/// A custody hand-off.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    /// Who took custody.
    pub to: String,
    /// Where.
    pub location: String,
    /// When, ms.
    pub at_ms: i64,
    /// Who recorded it.
    pub by: String,
}

/// A probe channel of a device that watches the shipment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Device id.
    pub device: String,
    /// Channel number (the product probe).
    pub channel: u8,
}

/// A shipment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    /// Free-text id; an ISBT 128 donation identification number is fine.
    pub id: String,
    /// Product description, e.g. "CAR-T, 2 bags".
    pub product: String,
    /// ISBT 128 donation identification number, if any, as validated at
    /// creation (`G1234 98 654321 00 H`; shipments stored before validation
    /// keep what was typed).
    #[serde(default)]
    pub din: Option<String>,
    /// ISBT 128 product code, if any (`S1194`; shape checked only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_code: Option<String>,
    /// Profile name (built-in or from config).
    pub profile: String,
    /// Devices and channels that watch it.
    pub watch: Vec<Watch>,
    /// Where from.
    pub origin: String,
    /// Where to.
    pub destination: String,
    /// Departure, ms (set when it leaves).
    pub departure_ms: Option<i64>,
    /// Estimated arrival, ms (updatable).
    pub eta_ms: Option<i64>,
    /// Collection of the product, ms: the viability window starts here.
    #[serde(default)]
    pub collection_ms: Option<i64>,
    /// Nominal viability window, hours (none for a cryopreserved product).
    #[serde(default)]
    pub window_h: Option<f64>,
    /// Lifecycle state.
    pub state: State,
    /// Arrival, ms.
    #[serde(default)]
    pub arrived_ms: Option<i64>,
    /// Custody hand-offs, in order.
    #[serde(default)]
    pub handoffs: Vec<Handoff>,
    /// Disposition, once closed.
    #[serde(default)]
    pub disposition: Option<Disposition>,
    /// When it was created, ms.
    pub created_ms: i64,
}

/// What a request to create a shipment carries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewShipment {
    /// Id.
    pub id: String,
    /// Product.
    pub product: String,
    /// ISBT 128 DIN with flags and check character (checked; see
    /// `coldchain_engine::isbt128`).
    #[serde(default)]
    pub din: Option<String>,
    /// ISBT 128 product code (shape checked).
    #[serde(default)]
    pub product_code: Option<String>,
    /// Profile name.
    pub profile: String,
    /// Watching devices.
    pub watch: Vec<Watch>,
    /// Origin.
    pub origin: String,
    /// Destination.
    pub destination: String,
    /// ETA, ms.
    #[serde(default)]
    pub eta_ms: Option<i64>,
    /// Collection, ms.
    #[serde(default)]
    pub collection_ms: Option<i64>,
    /// Viability window, hours.
    #[serde(default)]
    pub window_h: Option<f64>,
    /// Departure, ms: given, the shipment starts in transit.
    #[serde(default)]
    pub departure_ms: Option<i64>,
}

/// Why a shipment change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipmentError {
    /// Bad id.
    #[error(
        "shipment id {0:?}: expected 1-64 characters without '/', '+', '#' or control characters"
    )]
    BadId(String),
    /// A required field is empty.
    #[error("field {0}: must not be empty")]
    Empty(&'static str),
    /// A DIN that is not a valid ISBT 128 donation identification number.
    #[error("field din: {0}")]
    Din(#[from] crate::isbt128::DinError),
    /// A product code of the wrong shape.
    #[error("field product_code: {0}")]
    ProductCode(#[from] crate::isbt128::ProductCodeError),
    /// Bad window.
    #[error("field window_h: expected a positive number of hours, got {0}")]
    BadWindow(String),
    /// The transition is not allowed from the current state.
    #[error("shipment {id} is {state:?}: cannot {action}")]
    Transition {
        /// Shipment.
        id: String,
        /// Current state.
        state: State,
        /// What was attempted.
        action: &'static str,
    },
}

/// Validates a shipment id (it appears in MQTT topics and URLs).
pub fn check_id(id: &str) -> Result<(), ShipmentError> {
    if id.is_empty()
        || id.len() > 64
        || id
            .chars()
            .any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(ShipmentError::BadId(id.to_string()));
    }
    Ok(())
}

impl Shipment {
    /// A new shipment from a request, validated.
    pub fn create(req: NewShipment, now_ms: i64) -> Result<Shipment, ShipmentError> {
        check_id(&req.id)?;
        if req.product.trim().is_empty() {
            return Err(ShipmentError::Empty("product"));
        }
        if req.watch.is_empty() {
            return Err(ShipmentError::Empty("watch"));
        }
        if let Some(w) = req.window_h
            && !(w.is_finite() && w > 0.0)
        {
            return Err(ShipmentError::BadWindow(w.to_string()));
        }
        let din = match req.din.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(d) => Some(isbt128::parse_din(d)?.to_string()),
        };
        let product_code = match req.product_code.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) => Some(isbt128::parse_product_code(c)?),
        };
        Ok(Shipment {
            state: if req.departure_ms.is_some() {
                State::InTransit
            } else {
                State::Planned
            },
            id: req.id,
            product: req.product,
            din,
            product_code,
            profile: req.profile,
            watch: req.watch,
            origin: req.origin,
            destination: req.destination,
            departure_ms: req.departure_ms,
            eta_ms: req.eta_ms,
            collection_ms: req.collection_ms,
            window_h: req.window_h,
            arrived_ms: None,
            handoffs: Vec::new(),
            disposition: None,
            created_ms: now_ms,
        })
    }

    fn refuse(&self, action: &'static str) -> ShipmentError {
        ShipmentError::Transition {
            id: self.id.clone(),
            state: self.state,
            action,
        }
    }

    /// Departs: planned -> in transit.
    pub fn depart(&mut self, at_ms: i64) -> Result<(), ShipmentError> {
        if self.state != State::Planned {
            return Err(self.refuse("depart"));
        }
        self.state = State::InTransit;
        self.departure_ms = Some(at_ms);
        Ok(())
    }

    /// Updates the ETA (planned or in transit).
    pub fn set_eta(&mut self, eta_ms: i64) -> Result<(), ShipmentError> {
        if !matches!(self.state, State::Planned | State::InTransit) {
            return Err(self.refuse("change the ETA"));
        }
        self.eta_ms = Some(eta_ms);
        Ok(())
    }

    /// Records a custody hand-off (any state but closed).
    pub fn handoff(&mut self, h: Handoff) -> Result<(), ShipmentError> {
        if self.state == State::Closed {
            return Err(self.refuse("hand off"));
        }
        if h.to.trim().is_empty() {
            return Err(ShipmentError::Empty("to"));
        }
        self.handoffs.push(h);
        Ok(())
    }

    /// Arrives: in transit -> arrived.
    pub fn arrive(&mut self, at_ms: i64) -> Result<(), ShipmentError> {
        if self.state != State::InTransit {
            return Err(self.refuse("arrive"));
        }
        self.state = State::Arrived;
        self.arrived_ms = Some(at_ms);
        Ok(())
    }

    /// Closes with a person's disposition: arrived -> closed.
    pub fn close(&mut self, d: Disposition) -> Result<(), ShipmentError> {
        if self.state != State::Arrived {
            return Err(self.refuse("close (it must have arrived)"));
        }
        if d.comment.trim().is_empty() {
            return Err(ShipmentError::Empty("comment"));
        }
        if d.by.trim().is_empty() {
            return Err(ShipmentError::Empty("by"));
        }
        self.state = State::Closed;
        self.disposition = Some(d);
        Ok(())
    }

    /// Whether evaluation still runs (in transit, or arrived and awaiting a
    /// disposition: a logger dumped at arrival still brings data).
    pub fn is_watched(&self) -> bool {
        matches!(self.state, State::InTransit | State::Arrived)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> NewShipment {
        NewShipment {
            id: "W1234 25 123456".into(),
            product: "CAR-T".into(),
            din: Some("G1234 98 654321 00 H".into()),
            product_code: Some("S1194".into()),
            profile: "cryo-ln2".into(),
            watch: vec![Watch {
                device: "ln2-1".into(),
                channel: 0,
            }],
            origin: "Apheresis centre".into(),
            destination: "Manufacturing".into(),
            eta_ms: None,
            collection_ms: None,
            window_h: None,
            departure_ms: None,
        }
    }

    #[test]
    fn lifecycle_moves_forward_only() {
        let mut s = Shipment::create(req(), 0).unwrap();
        assert_eq!(s.state, State::Planned);
        assert!(s.arrive(5).is_err(), "cannot arrive before departing");
        s.depart(10).unwrap();
        assert!(s.depart(11).is_err());
        s.set_eta(100).unwrap();
        let d = Disposition {
            decision: Decision::Accepted,
            comment: "ok".into(),
            by: "lab".into(),
            at_ms: 50,
            signature: None,
        };
        assert!(s.close(d.clone()).is_err(), "cannot close before arrival");
        s.arrive(90).unwrap();
        assert!(s.set_eta(120).is_err());
        let mut empty = d.clone();
        empty.comment = " ".into();
        assert_eq!(s.close(empty), Err(ShipmentError::Empty("comment")));
        s.close(d).unwrap();
        assert_eq!(s.state, State::Closed);
        assert!(
            s.handoff(Handoff {
                to: "x".into(),
                location: "y".into(),
                at_ms: 1,
                by: "z".into()
            })
            .is_err()
        );
    }

    #[test]
    fn din_and_product_code_are_checked_at_creation() {
        let s = Shipment::create(
            NewShipment {
                din: Some("=g123498654321 00h".into()),
                product_code: Some("s1194".into()),
                ..req()
            },
            0,
        )
        .unwrap();
        assert_eq!(s.din.as_deref(), Some("G1234 98 654321 00 H"));
        assert_eq!(s.product_code.as_deref(), Some("S1194"));
        for (din, what) in [
            ("G1234 98 654321 00 J", "check character 'J'"),
            ("G1234 98 654321", "expected 16 characters"),
            ("G1234 98 654321 0X H", "flag characters"),
        ] {
            let e = Shipment::create(
                NewShipment {
                    din: Some(din.into()),
                    ..req()
                },
                0,
            )
            .unwrap_err();
            assert!(matches!(e, ShipmentError::Din(_)), "{din}");
            assert!(e.to_string().starts_with("field din: "), "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        let e = Shipment::create(
            NewShipment {
                product_code: Some("S11".into()),
                ..req()
            },
            0,
        )
        .unwrap_err();
        assert!(matches!(e, ShipmentError::ProductCode(_)), "{e}");
    }

    #[test]
    fn ids_that_would_break_topics_are_refused() {
        for bad in ["", "a/b", "a+", "#", "x\ny"] {
            let mut r = req();
            r.id = bad.into();
            assert!(
                matches!(Shipment::create(r, 0), Err(ShipmentError::BadId(_))),
                "{bad:?}"
            );
        }
    }
}
