//! The signed binary form used on MQTT `…/up` and `…/down` topics and inside
//! serial frames: `postcard(message) ‖ tag`, the tag being
//! [`DeviceKey::sign`] over the postcard bytes.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::auth::{DeviceKey, TAG_LEN};
use crate::frame::{DeviceId, Frame};

/// Largest postcard encoding of any [`Frame`] or [`crate::Downlink`].
/// (A frame filled to every `MAX_*` bound with worst-case varints fits: see the tests.)
pub const MAX_MESSAGE_LEN: usize = 640;
/// Largest signed message: [`MAX_MESSAGE_LEN`] plus the tag.
pub const MAX_SIGNED_LEN: usize = MAX_MESSAGE_LEN + TAG_LEN;

/// What went wrong encoding or decoding a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecError {
    /// Shorter than a tag plus one byte.
    TooShort(usize),
    /// Longer than [`MAX_SIGNED_LEN`].
    TooLong(usize),
    /// The output buffer is too small.
    BufferFull,
    /// The postcard bytes do not decode to the expected type.
    Malformed,
    /// The bytes after the message are not exactly one tag.
    TrailingBytes,
    /// The tag does not verify with the device's key.
    BadTag,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooShort(n) => write!(f, "message of {n} bytes is too short to hold a tag"),
            CodecError::TooLong(n) => {
                write!(
                    f,
                    "message of {n} bytes exceeds the {MAX_SIGNED_LEN}-byte limit"
                )
            }
            CodecError::BufferFull => f.write_str("output buffer too small"),
            CodecError::Malformed => f.write_str("bytes do not decode as a Coldchain message"),
            CodecError::TrailingBytes => {
                f.write_str("message is not followed by exactly one 16-byte tag")
            }
            CodecError::BadTag => f.write_str("tag does not verify with the device's key"),
        }
    }
}

/// Encodes `msg` with postcard and appends its tag; returns the used part of `buf`.
pub fn encode_signed<'b, T: Serialize>(
    msg: &T,
    key: &DeviceKey,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], CodecError> {
    let n = postcard::to_slice(msg, buf)
        .map_err(|_| CodecError::BufferFull)?
        .len();
    if buf.len() < n + TAG_LEN {
        return Err(CodecError::BufferFull);
    }
    let tag = key.sign(&buf[..n]);
    buf[n..n + TAG_LEN].copy_from_slice(&tag);
    Ok(&mut buf[..n + TAG_LEN])
}

/// Splits a signed message into its postcard bytes and its tag, checking lengths only.
pub fn split_signed(bytes: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    if bytes.len() <= TAG_LEN {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes.len() > MAX_SIGNED_LEN {
        return Err(CodecError::TooLong(bytes.len()));
    }
    Ok(bytes.split_at(bytes.len() - TAG_LEN))
}

/// Decodes a signed message *without* checking its tag.
///
/// A receiver needs the device id inside a frame to find the key; it must then
/// call [`DeviceKey::verify`] on the returned body bytes before trusting anything.
/// Returns the message and the `(body, tag)` split.
pub fn decode_unverified<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<(T, &'a [u8], &'a [u8]), CodecError> {
    let (body, tag) = split_signed(bytes)?;
    let (msg, rest) = postcard::take_from_bytes::<T>(body).map_err(|_| CodecError::Malformed)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok((msg, body, tag))
}

/// Verifies the tag with `key`, then decodes.
pub fn decode_signed<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    key: &DeviceKey,
) -> Result<T, CodecError> {
    let (body, tag) = split_signed(bytes)?;
    if !key.verify(body, tag) {
        return Err(CodecError::BadTag);
    }
    let (msg, rest) = postcard::take_from_bytes::<T>(body).map_err(|_| CodecError::Malformed)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(msg)
}

/// Decodes a signed [`Frame`] and verifies it with the key that `lookup` returns
/// for the frame's device. `lookup` returning `None` means the device is unknown.
pub fn open_frame<'k>(
    bytes: &[u8],
    lookup: impl FnOnce(&DeviceId) -> Option<&'k DeviceKey>,
) -> Result<Frame, OpenError> {
    let (frame, body, tag) = decode_unverified::<Frame>(bytes).map_err(OpenError::Codec)?;
    let key =
        lookup(&frame.device).ok_or_else(|| OpenError::UnknownDevice(frame.device.clone()))?;
    if !key.verify(body, tag) {
        return Err(OpenError::BadTag(frame.device));
    }
    Ok(frame)
}

/// Why [`open_frame`] refused a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// The bytes are not a signed frame.
    Codec(CodecError),
    /// The frame names a device with no key.
    UnknownDevice(DeviceId),
    /// The tag does not verify with that device's key.
    BadTag(DeviceId),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Codec(e) => e.fmt(f),
            OpenError::UnknownDevice(d) => write!(f, "device {d} is not registered"),
            OpenError::BadTag(d) => write!(f, "tag does not verify with the key of device {d}"),
        }
    }
}
