//! The JSON envelope on `coldchain/v1/dev/{device}/up/json`:
//! `{"frame": {...}, "tag": "<32 hex>"}`, the tag over the exact bytes of the
//! `frame` value (see `proto/README.md`).

use coldchain_proto::{Frame, TAG_LEN, Tag};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A parsed envelope that still holds the frame's exact bytes.
#[derive(Debug)]
pub struct Envelope<'a> {
    frame: &'a RawValue,
    tag: Option<Tag>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    frame: &'a RawValue,
    #[serde(default)]
    tag: Option<&'a str>,
}

impl<'a> Envelope<'a> {
    /// Parses the envelope; errors say what is wrong with it.
    pub fn parse(payload: &'a [u8]) -> Result<Self, String> {
        let w: Wire<'a> = serde_json::from_slice(payload).map_err(|e| {
            format!("JSON envelope: {e} (expected {{\"frame\": {{...}}, \"tag\": \"<32 hex>\"}})")
        })?;
        let tag = match w.tag {
            None => None,
            Some(t) => {
                let bytes = hex::decode(t)
                    .map_err(|_| format!("JSON envelope: tag {t:?} is not hexadecimal"))?;
                let tag: Tag = bytes.try_into().map_err(|_| {
                    format!("JSON envelope: tag must be {} hex digits", TAG_LEN * 2)
                })?;
                Some(tag)
            }
        };
        Ok(Envelope {
            frame: w.frame,
            tag,
        })
    }

    /// The exact bytes the tag covers.
    pub fn frame_bytes(&self) -> &'a [u8] {
        self.frame.get().as_bytes()
    }

    /// The tag, if the device signed.
    pub fn tag(&self) -> Option<Tag> {
        self.tag
    }

    /// Decodes the frame.
    pub fn frame(&self) -> Result<Frame, String> {
        serde_json::from_str(self.frame.get()).map_err(|e| format!("JSON frame: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldchain_proto::DeviceKey;

    /// The signed example in proto/README.md verifies with the documented key.
    #[test]
    fn readme_example_verifies() {
        let readme = include_str!("../../../proto/README.md");
        let line = readme
            .lines()
            .find(|l| l.starts_with("{\"frame\":"))
            .expect("signed example in proto/README.md");
        let env = Envelope::parse(line.as_bytes()).unwrap();
        let key = DeviceKey::from_bytes(core::array::from_fn(|i| i as u8));
        assert!(key.verify(env.frame_bytes(), &env.tag().unwrap()));
        assert_eq!(env.frame().unwrap().seq, 7);
        // One changed byte in the frame text breaks it.
        let tampered = line.replace("5125", "5126");
        let env = Envelope::parse(tampered.as_bytes()).unwrap();
        assert!(!key.verify(env.frame_bytes(), &env.tag().unwrap()));
    }

    #[test]
    fn bad_envelopes_say_why() {
        assert!(Envelope::parse(b"{}").unwrap_err().contains("frame"));
        assert!(
            Envelope::parse(b"{\"frame\":{},\"tag\":\"xyz\"}")
                .unwrap_err()
                .contains("hexadecimal")
        );
        assert!(
            Envelope::parse(b"{\"frame\":{},\"tag\":\"abcd\"}")
                .unwrap_err()
                .contains("32 hex")
        );
        assert!(Envelope::parse(b"\xff").is_err());
    }
}
