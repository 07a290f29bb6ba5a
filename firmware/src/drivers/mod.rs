//! Sensor drivers, one module per chip, on embedded-hal 1.0 traits only.

pub mod cvd;
pub mod max31865;
