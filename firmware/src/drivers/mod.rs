//! Sensor drivers, one module per chip, on embedded-hal 1.0 traits only.
//! Every driver reports a fault as a [`coldchain_proto::FaultKind`], never as
//! a number.

pub mod battery;
pub mod crc8;
pub mod cvd;
pub mod ds18b20;
pub mod lid;
pub mod max31856;
pub mod max31865;
pub mod sht4x;
pub mod tilt;
