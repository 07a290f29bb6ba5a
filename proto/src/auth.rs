//! Per-device message authentication: HMAC-SHA256 truncated to 16 bytes.
//!
//! Every message in either direction carries a tag over its exact encoded
//! bytes, made with the device's 32-byte key. Verification runs in constant
//! time (the `hmac` crate compares through `subtle`).

use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a device key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a tag on the wire, in bytes (HMAC-SHA256 truncated, RFC 2104 §5).
pub const TAG_LEN: usize = 16;

/// A message authentication tag.
pub type Tag = [u8; TAG_LEN];

/// A device's secret key. Its `Debug` form never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey([u8; KEY_LEN]);

/// Why a string is not a valid key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Not exactly 64 hexadecimal digits.
    Length(usize),
    /// A character that is not a hexadecimal digit, at this byte offset.
    NotHex(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(
                f,
                "a device key is 64 hexadecimal digits (32 bytes), got {n} characters"
            ),
            KeyError::NotHex(at) => write!(
                f,
                "a device key is 64 hexadecimal digits; character {at} is not one"
            ),
        }
    }
}

impl DeviceKey {
    /// A key from its raw bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        DeviceKey(bytes)
    }

    /// A key from 64 hexadecimal digits (either case).
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.len() != KEY_LEN * 2 {
            return Err(KeyError::Length(s.len()));
        }
        let mut out = [0u8; KEY_LEN];
        let b = s.as_bytes();
        for (i, byte) in out.iter_mut().enumerate() {
            let hi = hex_val(b[2 * i]).ok_or(KeyError::NotHex(2 * i))?;
            let lo = hex_val(b[2 * i + 1]).ok_or(KeyError::NotHex(2 * i + 1))?;
            *byte = (hi << 4) | lo;
        }
        Ok(DeviceKey(out))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; a 32-byte key never fails.
        match <Hmac<Sha256> as Mac>::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
        }
    }

    /// The tag of `data`.
    pub fn sign(&self, data: &[u8]) -> Tag {
        let mut mac = self.mac();
        mac.update(data);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    /// Checks `tag` against `data` in constant time. A tag of the wrong length fails.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        let mut mac = self.mac();
        mac.update(data);
        mac.verify_truncated_left(tag).is_ok()
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(<redacted>)")
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_case_2_truncated() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // The key is shorter than 32 bytes there, so check the MAC primitive directly.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let full = mac.finalize().into_bytes();
        assert_eq!(
            full[..16],
            [
                0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
                0x75, 0xc7
            ]
        );
    }

    #[test]
    fn key_hex_errors_name_the_problem() {
        assert_eq!(DeviceKey::from_hex("abcd"), Err(KeyError::Length(4)));
        let mut s = [b'0'; 64];
        s[10] = b'g';
        assert_eq!(
            DeviceKey::from_hex(core::str::from_utf8(&s).unwrap()),
            Err(KeyError::NotHex(10))
        );
    }

    #[test]
    fn sign_then_verify_and_reject_wrong_key() {
        let k1 = DeviceKey::from_bytes([7; 32]);
        let k2 = DeviceKey::from_bytes([8; 32]);
        let tag = k1.sign(b"frame");
        assert!(k1.verify(b"frame", &tag));
        assert!(!k2.verify(b"frame", &tag));
        assert!(!k1.verify(b"frame", &tag[..15]));
    }
}
