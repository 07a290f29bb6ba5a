//! Product profiles: what temperatures a lane tolerates, for how long, and how the
//! product decays.
//!
//! A [`Profile`] holds up to four high zones (H1-H4) and three low zones (L1-L3),
//! each with an explicit comparison, a type (single-event or cumulative), a delay,
//! a severity and a clearing hysteresis; the decay model of the product; whether
//! MKT applies and over which USP <1079.2> window; the warming limit of a
//! cryogenic lane; and data-health limits (silence, probe fault, lid, tilt,
//! battery).
//!
//! Profiles are built in ([`Profile::builtin`]) and can be replaced or added in
//! configuration. Deserialising a profile validates it, so a [`Profile`] value
//! that exists is always a valid one. In `coldchain.toml` a profile is a
//! `[[profiles]]` table and its zones `[[profiles.zones]]`:
//!
//! In `coldchain.toml` a profile is a `[[profiles]]` table and its zones are
//! `[[profiles.zones]]`, exactly as written here:
//!
//! ```toml
//! [[profiles]]
//! name = "fridge-48h"
//! nominal = { min = 2.0, max = 8.0 }
//! mkt = { window = "24h" }
//! viability = { margin = "4h" }
//! decay = { model = "arrhenius", activation_k = 10000.0, reference = 5.0 }
//! settle = "15m"           # optional: this lane's settle period (default alerts.settle_s)
//!
//! [[profiles.zones]]
//! id = "H1"
//! limit = "> 8.0"          # a 2-8 °C label includes 8.0
//! kind = "single"          # or "cumulative"
//! delay = "30m"
//! severity = "warning"     # info, warning, critical
//! hysteresis = 0.5         # °C, to clear
//! ```
//!
//! Temperatures in limits are exact decimal text converted to milli-°C.
#![deny(missing_docs)]

mod builtin;
pub(crate) mod text;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Names of the built-in profiles.
pub const BUILTIN_NAMES: [&str; 4] = ["cryo-ln2", "cryo-80", "fridge", "ambient"];

/// At most this many high zones (H1-H4).
pub const MAX_HIGH_ZONES: usize = 4;
/// At most this many low zones (L1-L3).
pub const MAX_LOW_ZONES: usize = 3;

/// A temperature in milli-°C.
///
/// In configuration it is written in °C, as a number (`0.5`, rounded to the
/// nearest milli-degree) or as exact decimal text (`"-135.5"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MilliC(pub i32);

impl MilliC {
    /// The temperature in °C.
    pub fn celsius(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl fmt::Display for MilliC {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} °C", text::fmt_milli_c(self.0))
    }
}

impl Serialize for MilliC {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.celsius())
    }
}

impl<'de> Deserialize<'de> for MilliC {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let out_of_range = || serde::de::Error::custom("temperature out of range");
        match Repr::deserialize(d)? {
            Repr::Int(c) => c
                .checked_mul(1000)
                .and_then(|m| i32::try_from(m).ok())
                .map(MilliC)
                .ok_or_else(out_of_range),
            Repr::Float(c) => {
                let m = (c * 1000.0).round();
                if m.is_finite() && m >= f64::from(i32::MIN) && m <= f64::from(i32::MAX) {
                    // In range and integral, checked just above.
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(MilliC(m as i32))
                } else {
                    Err(out_of_range())
                }
            }
            Repr::Text(t) => text::parse_milli_c(&t)
                .map(MilliC)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// How a value is compared with a limit. Stated explicitly on every zone:
/// WHO PQS indicators are inclusive (`>= 30.0` triggers at 30.0), while a
/// 2-8 °C label includes 8.0 (its upper zone is `> 8.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Comparison {
    /// `>`: strictly above.
    Above,
    /// `>=`: at or above.
    AtOrAbove,
    /// `<`: strictly below.
    Below,
    /// `<=`: at or below.
    AtOrBelow,
}

impl Comparison {
    /// The operator as written in configuration.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtOrAbove => ">=",
            Comparison::Below => "<",
            Comparison::AtOrBelow => "<=",
        }
    }

    /// Which side of the range the comparison watches.
    pub fn side(self) -> Side {
        match self {
            Comparison::Above | Comparison::AtOrAbove => Side::High,
            Comparison::Below | Comparison::AtOrBelow => Side::Low,
        }
    }

    /// True when `value` compares true against `limit`.
    pub fn holds(self, value: i32, limit: i32) -> bool {
        match self {
            Comparison::Above => value > limit,
            Comparison::AtOrAbove => value >= limit,
            Comparison::Below => value < limit,
            Comparison::AtOrBelow => value <= limit,
        }
    }
}

/// Which side of the acceptable range a zone watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Too warm (H zones).
    High,
    /// Too cold (L zones).
    Low,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::High => "high",
            Side::Low => "low",
        })
    }
}

/// A limit with its comparison, written `"> 8.0"`, `">= 30.0"`, `"<= -0.5"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// The comparison.
    pub cmp: Comparison,
    /// The limit, milli-°C.
    pub milli_c: i32,
}

impl Limit {
    /// Makes a limit.
    pub const fn new(cmp: Comparison, milli_c: i32) -> Self {
        Limit { cmp, milli_c }
    }

    /// True when `value` (milli-°C) is beyond the limit.
    pub fn is_beyond(&self, value: i32) -> bool {
        self.cmp.holds(value, self.milli_c)
    }

    /// True when `value` has come back far enough to clear a condition:
    /// it no longer compares true against the limit moved `hysteresis` milli-°C
    /// towards the acceptable range. With `"> 8.0"` and 0.5 hysteresis, a value
    /// clears at 7.5 or below; with `">= 30.0"` and 1.0, below 29.0.
    pub fn is_cleared(&self, value: i32, hysteresis: i32) -> bool {
        let moved = match self.cmp.side() {
            Side::High => self.milli_c.saturating_sub(hysteresis),
            Side::Low => self.milli_c.saturating_add(hysteresis),
        };
        !self.cmp.holds(value, moved)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.cmp.symbol(),
            text::fmt_milli_c(self.milli_c)
        )
    }
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (cmp, rest) = if let Some(r) = t.strip_prefix(">=") {
            (Comparison::AtOrAbove, r)
        } else if let Some(r) = t.strip_prefix("<=") {
            (Comparison::AtOrBelow, r)
        } else if let Some(r) = t.strip_prefix('>') {
            (Comparison::Above, r)
        } else if let Some(r) = t.strip_prefix('<') {
            (Comparison::Below, r)
        } else {
            return Err(format!(
                "limit {s:?} must start with its comparison: >, >=, < or <= (e.g. \"> 8.0\")"
            ));
        };
        let milli_c = text::parse_milli_c(rest).map_err(|e| format!("limit {s:?}: {e}"))?;
        Ok(Limit { cmp, milli_c })
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A zone identifier: H1-H4 (high) or L1-L3 (low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneId {
    side: Side,
    index: u8,
}

/// Written as its name, `H1`-`H4` or `L1`-`L3`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ZoneId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^(H[1-4]|L[1-3])$"))
            .description(Some("A zone: H1-H4 (high) or L1-L3 (low)"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ZoneId {}

impl ZoneId {
    /// The high zone `n` (1-4), or `None` outside that range.
    pub fn high(n: u8) -> Option<ZoneId> {
        (1..=MAX_HIGH_ZONES as u8).contains(&n).then_some(ZoneId {
            side: Side::High,
            index: n,
        })
    }

    /// The low zone `n` (1-3), or `None` outside that range.
    pub fn low(n: u8) -> Option<ZoneId> {
        (1..=MAX_LOW_ZONES as u8).contains(&n).then_some(ZoneId {
            side: Side::Low,
            index: n,
        })
    }

    /// Which side the zone is on.
    pub fn side(self) -> Side {
        self.side
    }

    /// The zone's number within its side (1-based).
    pub fn index(self) -> u8 {
        self.index
    }
}

impl fmt::Display for ZoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = match self.side {
            Side::High => 'H',
            Side::Low => 'L',
        };
        write!(f, "{c}{}", self.index)
    }
}

impl FromStr for ZoneId {
    type Err = ();
    /// Parses `"H1"`..`"H4"`, `"L1"`..`"L3"` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut chars = s.trim().chars();
        let side = chars.next().ok_or(())?;
        let n: u8 = chars.as_str().parse().map_err(|_| ())?;
        match side {
            'H' | 'h' => ZoneId::high(n).ok_or(()),
            'L' | 'l' => ZoneId::low(n).ok_or(()),
            _ => Err(()),
        }
    }
}

impl Serialize for ZoneId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ZoneId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|()| {
            serde::de::Error::custom(format!(
                "{s:?} is not a zone id; zones are H1-H4 (high) and L1-L3 (low)"
            ))
        })
    }
}

/// How time beyond a zone's limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneKind {
    /// Consecutive time beyond the limit; the counter resets as soon as the value
    /// comes back within the limit (LogTag "consecutive").
    Single,
    /// All time beyond the limit over the shipment; never resets (Controlant).
    Cumulative,
}

/// How urgent a condition is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look.
    Warning,
    /// The product is at risk now.
    Critical,
}

/// One alarm zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Zone {
    /// H1-H4 or L1-L3.
    pub id: ZoneId,
    /// The limit and its comparison.
    pub limit: Limit,
    /// Single-event or cumulative.
    pub kind: ZoneKind,
    /// Time beyond the limit before the zone fires, ms (exactly at the delay fires).
    #[serde(rename = "delay", serialize_with = "ser_duration")]
    pub delay_ms: i64,
    /// How urgent the alarm is.
    pub severity: Severity,
    /// How far back (milli-°C) the value must come before the condition clears.
    pub hysteresis: MilliC,
    /// Free text for people, e.g. "above label".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The decay model of a product: how fast its viability window is consumed at a
/// given temperature, relative to the reference temperature at which the nominal
/// window is defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecayModel {
    /// A piecewise-linear table of loss (% per hour) against temperature, clamped
    /// at both ends. The rate factor is `loss(T) / loss(reference)`.
    Table {
        /// The temperature at which the nominal window is defined.
        reference: MilliC,
        /// `(temperature, loss % per hour)`, strictly increasing in temperature.
        points: Vec<DecayPoint>,
    },
    /// Arrhenius: factor `exp(activation_k · (1/T_ref - 1/T))`, T in kelvin.
    Arrhenius {
        /// Activation energy over the gas constant, Ea/R, in kelvin.
        activation_k: f64,
        /// The temperature at which the nominal window is defined.
        reference: MilliC,
    },
}

/// One row of a [`DecayModel::Table`]: temperature and loss in % per hour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecayPoint(pub MilliC, pub f64);

/// MKT settings: the USP <1079.2> window (24 h for controlled cold, 30 days for
/// controlled room temperature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MktSettings {
    /// Length of the sliding window, ms.
    #[serde(rename = "window", with = "duration_serde")]
    pub window_ms: i64,
}

/// How the viability window is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViabilitySettings {
    /// Warn when the window predicted to remain at ETA falls below this, ms.
    #[serde(rename = "margin", with = "duration_serde", default = "default_margin")]
    pub margin_ms: i64,
    /// Rate factor applied to time without a valid reading (before the first
    /// reading, gaps, probe faults). 1.0 counts it as time at the reference
    /// temperature; a larger value is more cautious.
    #[serde(default = "one")]
    pub unknown_rate_factor: f64,
}

impl Default for ViabilitySettings {
    fn default() -> Self {
        ViabilitySettings {
            margin_ms: default_margin(),
            unknown_rate_factor: 1.0,
        }
    }
}

fn default_margin() -> i64 {
    4 * 3_600_000
}
fn one() -> f64 {
    1.0
}

/// The warming limit of a cryogenic lane: warming events above it are counted
/// and the time above it is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmingSpec {
    /// The critical limit, e.g. `"> -135.0"`.
    pub limit: Limit,
    /// A warming event ends when the value clears the limit by this much.
    #[serde(default)]
    pub hysteresis: MilliC,
}

/// Tilt limit: beyond `max_deg` from vertical for longer than `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiltLimit {
    /// Largest acceptable angle from vertical, degrees.
    pub max_deg: u8,
    /// Time beyond the angle before the condition fires, ms.
    #[serde(rename = "delay", with = "duration_serde")]
    pub delay_ms: i64,
    /// Severity of the condition.
    pub severity: Severity,
}

/// Data-health limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthLimits {
    /// A device is silent after this many sampling intervals without a sample.
    #[serde(default = "default_silent")]
    pub silent_after_intervals: u32,
    /// A probe fault fires after lasting this long, ms (0: at once).
    #[serde(rename = "probe_fault_delay", with = "duration_serde", default)]
    pub probe_fault_delay_ms: i64,
    /// Longest acceptable lid opening, ms; `None` for containers without a lid switch.
    #[serde(
        rename = "lid_open_max",
        with = "opt_duration_serde",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lid_open_max_ms: Option<i64>,
    /// Tilt limit; `None` where orientation does not matter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tilt: Option<TiltLimit>,
    /// Battery below this voltage is low, mV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_low_mv: Option<u16>,
}

fn default_silent() -> u32 {
    3
}

impl Default for HealthLimits {
    fn default() -> Self {
        HealthLimits {
            silent_after_intervals: default_silent(),
            probe_fault_delay_ms: 0,
            lid_open_max_ms: None,
            tilt: None,
            battery_low_mv: None,
        }
    }
}

/// The nominal range of a lane, for people and reports; alarms come from zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nominal {
    /// Lowest nominal temperature, if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<MilliC>,
    /// Highest nominal temperature, if bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<MilliC>,
}

/// A product profile. Every value of this type has passed [`Profile::validate`]
/// (deserialisation validates), unless built by hand field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ProfileSpec")]
pub struct Profile {
    /// The profile's name, e.g. `"fridge"`.
    pub name: String,
    /// A cryogenic lane: MKT does not apply.
    pub cryogenic: bool,
    /// Nominal range, descriptive.
    pub nominal: Nominal,
    /// Alarm zones, sorted by id (H1..H4, then L1..L3).
    pub zones: Vec<Zone>,
    /// Decay model; `None` when the product has no viability window while in range
    /// (cryopreserved products).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decay: Option<DecayModel>,
    /// MKT settings; `None` when MKT does not apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mkt: Option<MktSettings>,
    /// Viability judgement settings.
    pub viability: ViabilitySettings,
    /// Warming limit of a cryogenic lane.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warming: Option<WarmingSpec>,
    /// Data-health limits.
    pub health: HealthLimits,
    /// The settle period after departure during which zones do not count,
    /// for this lane (a dry shipper settles differently from a fridge box).
    /// `None`: the daemon's `alerts.settle_s`.
    #[serde(
        default,
        with = "opt_duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub settle_ms: Option<i64>,
}

/// Why a profile is refused. Every message names the profile, and the zone where
/// there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    /// No built-in profile of that name.
    #[error("no built-in profile {0:?}; the built-ins are cryo-ln2, cryo-80, fridge, ambient")]
    UnknownBuiltin(String),
    /// The profile has no name.
    #[error("a profile needs a non-empty name")]
    NoName,
    /// A zone id outside H1-H4 / L1-L3.
    #[error(
        "profile {profile:?}: zone {zone:?} is refused: a profile has at most 4 high zones (H1-H4) and 3 low zones (L1-L3)"
    )]
    BadZoneId {
        /// The profile.
        profile: String,
        /// The zone id as written.
        zone: String,
    },
    /// The same zone id twice.
    #[error("profile {profile:?}: zone {zone} is defined twice")]
    DuplicateZone {
        /// The profile.
        profile: String,
        /// The zone.
        zone: ZoneId,
    },
    /// More zones on one side than allowed (only reachable for hand-built profiles).
    #[error(
        "profile {profile:?}: {count} {side} zones, the last being {zone}; at most {max} are allowed"
    )]
    TooManyZones {
        /// The profile.
        profile: String,
        /// The side.
        side: Side,
        /// How many there are.
        count: usize,
        /// The most allowed.
        max: usize,
        /// The first zone over the limit.
        zone: ZoneId,
    },
    /// A high zone with a low comparison, or the reverse.
    #[error(
        "profile {profile:?}: zone {zone} is a {side} zone but its limit \"{limit}\" watches the other side; high zones use > or >=, low zones < or <="
    )]
    WrongSide {
        /// The profile.
        profile: String,
        /// The zone.
        zone: ZoneId,
        /// The zone's side.
        side: Side,
        /// The limit.
        limit: Limit,
    },
    /// Something else wrong with a zone.
    #[error("profile {profile:?}: zone {zone}: {problem}")]
    BadZone {
        /// The profile.
        profile: String,
        /// The zone.
        zone: ZoneId,
        /// What is wrong.
        problem: String,
    },
    /// Something wrong outside the zones.
    #[error("profile {profile:?}: {problem}")]
    Invalid {
        /// The profile.
        profile: String,
        /// What is wrong.
        problem: String,
    },
}

impl Profile {
    /// A built-in profile: `cryo-ln2`, `cryo-80`, `fridge` or `ambient`.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let p = match name {
            "cryo-ln2" => builtin::cryo_ln2(),
            "cryo-80" => builtin::cryo_80(),
            "fridge" => builtin::fridge(),
            "ambient" => builtin::ambient(),
            _ => return Err(ProfileError::UnknownBuiltin(name.to_owned())),
        };
        debug_assert_eq!(p.validate(), Ok(()));
        Ok(p)
    }

    /// The zone with this id, if the profile has it.
    pub fn zone(&self, id: ZoneId) -> Option<&Zone> {
        self.zones.iter().find(|z| z.id == id)
    }

    /// Checks every rule: zone ids and counts, comparison sides, non-negative
    /// delays and hysteresis, a usable decay model, no MKT on a cryogenic lane.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let profile = || self.name.clone();
        if self.name.trim().is_empty() {
            return Err(ProfileError::NoName);
        }
        let mut seen: Vec<ZoneId> = Vec::new();
        for (side, max) in [(Side::High, MAX_HIGH_ZONES), (Side::Low, MAX_LOW_ZONES)] {
            let on_side: Vec<&Zone> = self.zones.iter().filter(|z| z.id.side() == side).collect();
            if on_side.len() > max {
                return Err(ProfileError::TooManyZones {
                    profile: profile(),
                    side,
                    count: on_side.len(),
                    max,
                    zone: on_side[max].id,
                });
            }
        }
        for z in &self.zones {
            if seen.contains(&z.id) {
                return Err(ProfileError::DuplicateZone {
                    profile: profile(),
                    zone: z.id,
                });
            }
            seen.push(z.id);
            if z.limit.cmp.side() != z.id.side() {
                return Err(ProfileError::WrongSide {
                    profile: profile(),
                    zone: z.id,
                    side: z.id.side(),
                    limit: z.limit,
                });
            }
            let bad = |problem: &str| ProfileError::BadZone {
                profile: profile(),
                zone: z.id,
                problem: problem.to_owned(),
            };
            if z.delay_ms < 0 {
                return Err(bad("the delay is negative"));
            }
            if z.hysteresis.0 < 0 {
                return Err(bad("the hysteresis is negative"));
            }
        }
        let invalid = |problem: String| ProfileError::Invalid {
            profile: profile(),
            problem,
        };
        if let Some(decay) = &self.decay {
            decay.check().map_err(invalid)?;
        }
        if let Some(mkt) = &self.mkt {
            if self.cryogenic {
                return Err(invalid(
                    "MKT means nothing on a cryogenic lane; remove [mkt] or set cryogenic = false"
                        .into(),
                ));
            }
            if mkt.window_ms <= 0 {
                return Err(invalid("the MKT window must be longer than zero".into()));
            }
        }
        if self.viability.margin_ms < 0 {
            return Err(invalid("the viability margin is negative".into()));
        }
        let f = self.viability.unknown_rate_factor;
        if !(f.is_finite() && f >= 0.0) {
            return Err(invalid(format!(
                "unknown_rate_factor {f} must be a finite number >= 0"
            )));
        }
        if let Some(w) = &self.warming {
            if w.limit.cmp.side() != Side::High {
                return Err(invalid(format!(
                    "the warming limit \"{}\" must watch the high side (> or >=)",
                    w.limit
                )));
            }
            if w.hysteresis.0 < 0 {
                return Err(invalid("the warming hysteresis is negative".into()));
            }
        }
        let h = &self.health;
        if h.silent_after_intervals == 0 {
            return Err(invalid("silent_after_intervals must be at least 1".into()));
        }
        if h.probe_fault_delay_ms < 0
            || h.lid_open_max_ms.is_some_and(|v| v < 0)
            || h.tilt.is_some_and(|t| t.delay_ms < 0)
        {
            return Err(invalid("a data-health delay is negative".into()));
        }
        Ok(())
    }
}

impl DecayModel {
    fn check(&self) -> Result<(), String> {
        match self {
            DecayModel::Table { reference, points } => {
                if points.is_empty() {
                    return Err("the decay table is empty".into());
                }
                for w in points.windows(2) {
                    if w[1].0 <= w[0].0 {
                        return Err(format!(
                            "decay table temperatures must increase strictly ({} then {})",
                            w[0].0, w[1].0
                        ));
                    }
                }
                if let Some(p) = points.iter().find(|p| !(p.1.is_finite() && p.1 >= 0.0)) {
                    return Err(format!("decay table loss {} at {} must be >= 0", p.1, p.0));
                }
                if self.loss_pct_per_hour(reference.0).unwrap_or(0.0) <= 0.0 {
                    return Err(format!(
                        "the decay table's loss at the reference temperature {reference} must be above zero"
                    ));
                }
                Ok(())
            }
            DecayModel::Arrhenius {
                activation_k,
                reference,
            } => {
                if !(activation_k.is_finite() && *activation_k > 0.0) {
                    return Err(format!(
                        "activation_k {activation_k} must be a positive number of kelvin"
                    ));
                }
                if reference.celsius() <= -273.15 {
                    return Err("the reference temperature is below absolute zero".into());
                }
                Ok(())
            }
        }
    }

    /// Loss in % per hour at `milli_c` for a table model (linear interpolation,
    /// clamped at the ends); `None` for an Arrhenius model.
    pub fn loss_pct_per_hour(&self, milli_c: i32) -> Option<f64> {
        let DecayModel::Table { points, .. } = self else {
            return None;
        };
        let first = points.first()?;
        let last = points.last()?;
        if milli_c <= first.0.0 {
            return Some(first.1);
        }
        if milli_c >= last.0.0 {
            return Some(last.1);
        }
        let i = points.partition_point(|p| p.0.0 <= milli_c);
        let (a, b) = (points[i - 1], points[i]);
        let frac = f64::from(milli_c - a.0.0) / f64::from(b.0.0 - a.0.0);
        Some(a.1 + (b.1 - a.1) * frac)
    }

    /// The rate at which the window is consumed at `milli_c`, relative to the
    /// reference temperature (1.0 there).
    pub fn rate_factor(&self, milli_c: i32) -> f64 {
        match self {
            DecayModel::Table { reference, .. } => {
                let at = self.loss_pct_per_hour(milli_c).unwrap_or(0.0);
                let at_ref = self.loss_pct_per_hour(reference.0).unwrap_or(0.0);
                if at_ref > 0.0 {
                    at / at_ref
                } else {
                    f64::INFINITY
                }
            }
            DecayModel::Arrhenius {
                activation_k,
                reference,
            } => crate::arrhenius::rate_factor(
                f64::from(milli_c) / 1000.0,
                reference.celsius(),
                *activation_k,
            ),
        }
    }
}

/// The raw, unvalidated form read from configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSpec {
    name: String,
    #[serde(default)]
    cryogenic: bool,
    #[serde(default)]
    nominal: Nominal,
    #[serde(default)]
    zones: Vec<ZoneSpec>,
    #[serde(default)]
    decay: Option<DecayModel>,
    #[serde(default)]
    mkt: Option<MktSettings>,
    #[serde(default)]
    viability: ViabilitySettings,
    #[serde(default)]
    warming: Option<WarmingSpec>,
    #[serde(default)]
    health: HealthLimits,
    #[serde(default, with = "opt_duration_serde")]
    settle: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneSpec {
    id: String,
    limit: Limit,
    kind: ZoneKind,
    #[serde(with = "duration_serde")]
    delay: i64,
    severity: Severity,
    #[serde(default)]
    hysteresis: MilliC,
    #[serde(default)]
    label: Option<String>,
}

impl TryFrom<ProfileSpec> for Profile {
    type Error = ProfileError;
    fn try_from(spec: ProfileSpec) -> Result<Self, ProfileError> {
        let mut zones = Vec::with_capacity(spec.zones.len());
        for z in spec.zones {
            let id: ZoneId = z.id.parse().map_err(|()| ProfileError::BadZoneId {
                profile: spec.name.clone(),
                zone: z.id.clone(),
            })?;
            zones.push(Zone {
                id,
                limit: z.limit,
                kind: z.kind,
                delay_ms: z.delay,
                severity: z.severity,
                hysteresis: z.hysteresis,
                label: z.label,
            });
        }
        zones.sort_by_key(|z| z.id);
        let p = Profile {
            name: spec.name,
            cryogenic: spec.cryogenic,
            nominal: spec.nominal,
            zones,
            decay: spec.decay,
            mkt: spec.mkt,
            viability: spec.viability,
            warming: spec.warming,
            health: spec.health,
            settle_ms: spec.settle,
        };
        p.validate()?;
        Ok(p)
    }
}

fn ser_duration<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&text::fmt_duration_ms(*ms))
}

/// Serde for durations written `"30m"`, `"10h"`, `"800h50m"`.
mod duration_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        super::ser_duration(ms, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::text::parse_duration_ms(&s).map_err(serde::de::Error::custom)
    }
}

/// Serde for optional durations.
mod opt_duration_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => super::ser_duration(ms, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::text::parse_duration_ms(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
