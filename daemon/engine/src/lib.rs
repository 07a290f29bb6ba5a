//! Coldchain's domain engine: what a shipment's data means, with no I/O.
//!
//! * [`profile`]: product profiles (zones H1-H4/L1-L3, decay, MKT window,
//!   health limits, settle period);
//! * [`alarm`]: conditions from samples in device time (zones, data health,
//!   trend, warming) and [`alarm::revision`], how raised alarms follow the data;
//! * [`shipment`]: the shipment lifecycle (planned, in transit, arrived,
//!   closed with a signed disposition), custody hand-offs;
//! * [`viability`]: the window consumed and remaining;
//! * [`mkt`]: mean kinetic temperature, on the Arrhenius relation of
//!   [`arrhenius`] (which the decay models use too);
//! * [`tracker`]: the same evaluation, incrementally (work proportional to
//!   new data).
//! * [`isbt128`]: the donation identification number and product code;
//! * [`calibration`]: probe certificates, corrections, IEC 60751 tolerances;
//! * [`holdtime`]: a dry shipper's predicted crossing of its limit against the ETA;
//! * [`alert`]: alerts as data (lifecycle, revisions, withdrawal) and the
//!   sentence that describes a condition;
//! * [`evaluation`]: everything known about a shipment at one moment;
//! * [`report`]: the arrival report's data and its plain sentences of fact.
//!
//! Every function takes the data and the time it needs as arguments: no
//! tokio, no database, no wall clock. The daemon (`coldchain-daemon`) does the
//! I/O: ingest, store, delivery, HTTP, CLI; see `daemon/DESIGN.md` and this
//! crate's `DESIGN.md`. Domain facts and their sources: `docs/domain.md`.
#![forbid(unsafe_code)]

pub mod alarm;
pub mod alert;
pub mod arrhenius;
pub mod calibration;
pub mod evaluation;
pub mod holdtime;
pub mod isbt128;
pub mod mkt;
pub mod profile;
pub mod report;
pub mod shipment;
pub mod tracker;
pub mod viability;
