//! Serial framing: `0x00 ‖ COBS(payload ‖ CRC-32(payload) as little-endian) ‖ 0x00`.
//!
//! The payload is a signed message from [`crate::codec`]. The CRC
//! (CRC-32/ISO-HDLC, as in Ethernet and zlib) catches line noise before the
//! HMAC is even tried, so a noisy cable is told apart from a forgery. The
//! leading delimiter ends any half-sent frame left on the line, so a frame cut
//! by a power loss costs only itself, never the frame after it.

use core::fmt;

use crc::{CRC_32_ISO_HDLC, Crc};

use crate::codec::MAX_SIGNED_LEN;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
const CRC_LEN: usize = 4;

/// Largest payload a serial frame carries (a signed message).
pub const MAX_PAYLOAD_LEN: usize = MAX_SIGNED_LEN;
/// Largest COBS-encoded body between the delimiters.
pub const MAX_ENCODED_LEN: usize = cobs_max(MAX_PAYLOAD_LEN + CRC_LEN);
/// Largest frame on the line, both delimiters included.
pub const MAX_FRAME_LEN: usize = MAX_ENCODED_LEN + 2;

const _: () = assert!(MAX_FRAME_LEN > MAX_PAYLOAD_LEN + CRC_LEN + 2);

const fn cobs_max(n: usize) -> usize {
    // One overhead byte per 254 data bytes, at least one.
    n + n / 254 + 1
}

/// Why a serial frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_ENCODED_LEN`] bytes arrived without a delimiter; the
    /// decoder skipped to the next delimiter.
    TooLong,
    /// The bytes between delimiters are not valid COBS.
    Cobs,
    /// Too short to hold a CRC and a payload.
    TooShort,
    /// The CRC does not match: the frame was damaged on the line.
    Crc,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong => write!(
                f,
                "serial frame longer than {MAX_ENCODED_LEN} bytes; skipped to next delimiter"
            ),
            FrameError::Cobs => f.write_str("serial frame is not valid COBS"),
            FrameError::TooShort => f.write_str("serial frame too short to hold a payload and CRC"),
            FrameError::Crc => f.write_str("serial frame CRC mismatch (damaged on the line)"),
        }
    }
}

/// Encodes `payload` as a delimited serial frame into `out`; returns its length.
pub fn encode(payload: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(FrameError::TooLong);
    }
    let mut raw = [0u8; MAX_PAYLOAD_LEN + CRC_LEN];
    let n = payload.len();
    raw[..n].copy_from_slice(payload);
    raw[n..n + CRC_LEN].copy_from_slice(&CRC32.checksum(payload).to_le_bytes());
    let raw = &raw[..n + CRC_LEN];
    if out.len() < cobs_max(raw.len()) + 2 {
        return Err(FrameError::TooLong);
    }
    out[0] = 0;
    let len = cobs::try_encode(raw, &mut out[1..]).map_err(|_| FrameError::TooLong)?;
    out[1 + len] = 0;
    Ok(len + 2)
}

/// A streaming decoder: feed it bytes as they arrive, get whole payloads out.
///
/// It never panics on any input, reports every damaged frame once, and
/// resynchronises at the next `0x00`.
#[derive(Debug)]
pub struct Decoder {
    buf: [u8; MAX_ENCODED_LEN],
    len: usize,
    /// Skipping bytes until the next delimiter after an over-long frame.
    overflow: bool,
    /// The last call returned a payload borrowed from `buf`; clear before reuse.
    consumed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        Decoder {
            buf: [0; MAX_ENCODED_LEN],
            len: 0,
            overflow: false,
            consumed: false,
        }
    }

    /// Feeds one byte. Returns `Some` when the byte ended a frame: its payload,
    /// or why it was refused. Empty frames (back-to-back delimiters) are skipped.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if self.consumed {
            self.len = 0;
            self.consumed = false;
        }
        if byte != 0 {
            if self.overflow {
                return None;
            }
            if self.len == self.buf.len() {
                self.overflow = true;
                self.len = 0;
                return None;
            }
            self.buf[self.len] = byte;
            self.len += 1;
            return None;
        }
        if self.overflow {
            self.overflow = false;
            self.len = 0;
            return Some(Err(FrameError::TooLong));
        }
        if self.len == 0 {
            return None;
        }
        self.consumed = true;
        let n = match cobs::decode_in_place(&mut self.buf[..self.len]) {
            Ok(n) => n,
            Err(_) => return Some(Err(FrameError::Cobs)),
        };
        if n <= CRC_LEN {
            return Some(Err(FrameError::TooShort));
        }
        let (payload, crc) = self.buf[..n].split_at(n - CRC_LEN);
        let mut want = [0u8; CRC_LEN];
        want.copy_from_slice(crc);
        if CRC32.checksum(payload) != u32::from_le_bytes(want) {
            return Some(Err(FrameError::Crc));
        }
        Some(Ok(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(
        dec: &mut Decoder,
        bytes: &[u8],
    ) -> ([[u8; 8]; 4], [Option<FrameError>; 8], usize, usize) {
        let mut ok = [[0u8; 8]; 4];
        let mut errs = [None; 8];
        let (mut no, mut ne) = (0, 0);
        for &b in bytes {
            match dec.push(b) {
                Some(Ok(p)) => {
                    ok[no][..p.len()].copy_from_slice(p);
                    no += 1;
                }
                Some(Err(e)) => {
                    errs[ne] = Some(e);
                    ne += 1;
                }
                None => {}
            }
        }
        (ok, errs, no, ne)
    }

    #[test]
    fn round_trip_with_zeros_in_payload() {
        let mut out = [0u8; 64];
        let n = encode(&[0, 1, 0, 2, 0, 0, 3, 0], &mut out).unwrap();
        assert_eq!(out[0], 0);
        assert_eq!(out[n - 1], 0);
        assert!(out[1..n - 1].iter().all(|&b| b != 0));
        let mut dec = Decoder::new();
        let (ok, _, no, ne) = collect(&mut dec, &out[..n]);
        assert_eq!((no, ne), (1, 0));
        assert_eq!(ok[0], [0, 1, 0, 2, 0, 0, 3, 0]);
    }

    #[test]
    fn cut_frame_costs_only_itself() {
        let mut a = [0u8; 64];
        let na = encode(&[1, 2, 3, 4, 5, 6, 7, 8], &mut a).unwrap();
        let mut b = [0u8; 64];
        let nb = encode(&[9, 9, 9, 9, 9, 9, 9, 9], &mut b).unwrap();
        // First frame cut after 5 bytes (no closing delimiter), then a whole frame.
        let mut line = [0u8; 128];
        line[..5].copy_from_slice(&a[..5]);
        line[5..5 + nb].copy_from_slice(&b[..nb]);
        let mut dec = Decoder::new();
        let (ok, errs, no, ne) = collect(&mut dec, &line[..5 + nb]);
        assert_eq!(no, 1, "the whole frame after the cut one must come through");
        assert_eq!(ok[0], [9; 8]);
        assert_eq!(ne, 1, "the cut frame is reported once");
        assert!(matches!(
            errs[0],
            Some(FrameError::Crc | FrameError::Cobs | FrameError::TooShort)
        ));
        assert!(na > 5, "the cut must fall inside the first frame");
    }

    #[test]
    fn flipped_byte_is_a_crc_error() {
        let mut a = [0u8; 64];
        let n = encode(&[1, 2, 3, 4, 5, 6, 7, 8], &mut a).unwrap();
        a[4] ^= 0x10;
        let mut dec = Decoder::new();
        let (_, errs, no, ne) = collect(&mut dec, &a[..n]);
        assert_eq!((no, ne), (0, 1));
        assert!(matches!(
            errs[0],
            Some(FrameError::Crc) | Some(FrameError::Cobs)
        ));
    }

    #[test]
    fn overlong_garbage_is_reported_once_then_resyncs() {
        let mut dec = Decoder::new();
        for _ in 0..(MAX_ENCODED_LEN * 2) {
            assert!(dec.push(0x55).is_none());
        }
        assert_eq!(dec.push(0), Some(Err(FrameError::TooLong)));
        let mut a = [0u8; 64];
        let n = encode(&[4; 8], &mut a).unwrap();
        let (ok, _, no, ne) = collect(&mut dec, &a[..n]);
        assert_eq!((no, ne), (1, 0));
        assert_eq!(ok[0], [4; 8]);
    }
}
