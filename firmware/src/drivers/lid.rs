//! The lid: a switch (or a light sensor's comparator output) on an input pin,
//! debounced over consecutive samples.

use coldchain_proto::EventKind;
use embedded_hal::digital::InputPin;

/// Which pin level means "open".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenLevel {
    /// High when open (normally-closed switch to ground, pull-up).
    High,
    /// Low when open.
    Low,
}

/// A debounced lid switch.
#[derive(Debug)]
pub struct Lid<P> {
    pin: P,
    open_level: OpenLevel,
    /// Debounced state.
    open: bool,
    /// Consecutive samples disagreeing with the debounced state.
    pending: u8,
    /// Samples needed to accept a change.
    samples: u8,
}

impl<P: InputPin> Lid<P> {
    /// A lid assumed closed, accepting a change after `samples` consecutive reads.
    pub fn new(pin: P, open_level: OpenLevel, samples: u8) -> Self {
        Lid {
            pin,
            open_level,
            open: false,
            pending: 0,
            samples: samples.max(1),
        }
    }

    /// The debounced state.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Reads the pin; returns the event when the debounced state changes.
    pub fn poll(&mut self) -> Result<Option<EventKind>, P::Error> {
        let high = self.pin.is_high()?;
        let raw_open = high == (self.open_level == OpenLevel::High);
        if raw_open == self.open {
            self.pending = 0;
            return Ok(None);
        }
        self.pending += 1;
        if self.pending < self.samples {
            return Ok(None);
        }
        self.pending = 0;
        self.open = raw_open;
        Ok(Some(if raw_open {
            EventKind::LidOpened
        } else {
            EventKind::LidClosed
        }))
    }
}
