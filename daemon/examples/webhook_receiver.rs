//! A receiver for the daemon's webhooks: checks the Standard Webhooks
//! signature (<https://www.standardwebhooks.com/>), refuses a delivery whose
//! timestamp is more than 5 minutes from its own clock, and refuses a
//! `webhook-id` it has already accepted (a replay). Plain `std` networking,
//! one request at a time: a model for your own receiver, not a server to run
//! in production.
//!
//! ```sh
//! cargo run -p coldchain-daemon --example webhook_receiver -- 127.0.0.1:9000 'whsec_…'
//! ```
//!
//! with, in coldchain.toml:
//!
//! ```toml
//! [[webhooks]]
//! url = "http://127.0.0.1:9000/coldchain"
//! secret = "whsec_…"            # the same secret
//! ```
//!
//! Answers 204 to an accepted delivery (the daemon then drops it from its
//! outbox), 401 to a bad signature, 400 to a stale or malformed one and 409
//! to a replay; each is printed on standard output.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Deliveries whose timestamp is further than this from now are refused;
/// ids are remembered this long (anything older is refused as stale anyway).
const TOLERANCE_S: i64 = 5 * 60;

/// Why a delivery was refused.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// A `webhook-*` header is missing.
    Missing(&'static str),
    /// `webhook-timestamp` is not an integer.
    BadTimestamp,
    /// Sent more than [`TOLERANCE_S`] before now (or after: a wrong clock).
    Stale { age_s: i64 },
    /// No `v1,` signature in `webhook-signature` matches.
    BadSignature,
    /// This `webhook-id` was accepted already.
    Replayed,
}

impl Refusal {
    fn status(&self) -> u16 {
        match self {
            Refusal::BadSignature => 401,
            Refusal::Replayed => 409,
            Refusal::Missing(_) | Refusal::BadTimestamp | Refusal::Stale { .. } => 400,
        }
    }
}

/// The receiver's state: its key and the ids it accepted recently.
struct Receiver {
    key: Vec<u8>,
    seen: HashMap<String, i64>,
}

impl Receiver {
    /// `whsec_<base64>` (Standard Webhooks), or the plain-text secret form
    /// the daemon also accepts (its UTF-8 bytes are the key).
    fn new(secret: &str) -> Result<Receiver, String> {
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("secret: after whsec_ expected base64: {e}"))?,
            None => secret.as_bytes().to_vec(),
        };
        Ok(Receiver {
            key,
            seen: HashMap::new(),
        })
    }

    /// Checks one delivery at `now_s` (Unix seconds): the timestamp first,
    /// then the signature over `{id}.{timestamp}.{body}`, then the id (only
    /// a verified delivery is remembered, so nobody can block a future id).
    fn check(
        &mut self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now_s: i64,
    ) -> Result<(), Refusal> {
        let id = id.ok_or(Refusal::Missing("webhook-id"))?;
        let ts_text = timestamp.ok_or(Refusal::Missing("webhook-timestamp"))?;
        let sigs = signature.ok_or(Refusal::Missing("webhook-signature"))?;
        let ts: i64 = ts_text.parse().map_err(|_| Refusal::BadTimestamp)?;
        if (now_s - ts).abs() > TOLERANCE_S {
            return Err(Refusal::Stale { age_s: now_s - ts });
        }
        // One or more space-separated `version,base64` signatures (several
        // while a secret is being rotated); any v1 that verifies will do.
        let verified = sigs.split(' ').any(|s| {
            let Some(b64) = s.strip_prefix("v1,") else {
                return false;
            };
            let Ok(tag) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return false;
            };
            let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(&self.key) else {
                return false;
            };
            mac.update(format!("{id}.{ts_text}.").as_bytes());
            mac.update(body);
            mac.verify_slice(&tag).is_ok() // constant time
        });
        if !verified {
            return Err(Refusal::BadSignature);
        }
        self.seen.retain(|_, t| now_s - *t <= 2 * TOLERANCE_S);
        if self.seen.contains_key(id) {
            return Err(Refusal::Replayed);
        }
        self.seen.insert(id.to_string(), ts);
        Ok(())
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(secret)) = (args.next(), args.next()) else {
        eprintln!("usage: webhook_receiver ADDR:PORT SECRET");
        std::process::exit(2);
    };
    let mut rx = Receiver::new(&secret)?;
    let listener = TcpListener::bind(&addr)?;
    eprintln!("listening on {addr}");
    for conn in listener.incoming() {
        let mut conn = conn?;
        let mut r = BufReader::new(conn.try_clone()?);
        let mut headers = HashMap::new();
        let mut line = String::new();
        r.read_line(&mut line)?; // request line
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len.min(1 << 20)];
        r.read_exact(&mut body)?;
        let h = |k: &str| headers.get(k).map(String::as_str);
        let verdict = rx.check(
            h("webhook-id"),
            h("webhook-timestamp"),
            h("webhook-signature"),
            &body,
            now_s(),
        );
        let status = match &verdict {
            Ok(()) => {
                println!(
                    "accepted {}: {}",
                    h("webhook-id").unwrap_or(""),
                    String::from_utf8_lossy(&body)
                );
                204
            }
            Err(why) => {
                println!("refused {}: {why:?}", h("webhook-id").unwrap_or("?"));
                why.status()
            }
        };
        write!(
            conn,
            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(rx: &mut Receiver, id: &str, sig: &str, body: &[u8], now: i64) -> Result<(), Refusal> {
        rx.check(Some(id), Some(&TS.to_string()), Some(sig), body, now)
    }

    #[test]
    fn a_fresh_signed_delivery_is_accepted_once() {
        let mut rx = Receiver::new(SECRET).unwrap();
        assert_eq!(check(&mut rx, ID, SIG, BODY, TS + 10), Ok(()));
        assert_eq!(
            check(&mut rx, ID, SIG, BODY, TS + 20),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn a_delivery_older_than_five_minutes_is_refused() {
        let mut rx = Receiver::new(SECRET).unwrap();
        assert_eq!(
            check(&mut rx, ID, SIG, BODY, TS + 301),
            Err(Refusal::Stale { age_s: 301 })
        );
        assert_eq!(
            check(&mut rx, ID, SIG, BODY, TS - 301),
            Err(Refusal::Stale { age_s: -301 })
        );
        assert_eq!(check(&mut rx, ID, SIG, BODY, TS + 300), Ok(()));
    }

    #[test]
    fn a_changed_body_id_or_timestamp_fails_the_signature() {
        let mut rx = Receiver::new(SECRET).unwrap();
        let other = br#"{"test": 2432232315}"#;
        assert_eq!(
            check(&mut rx, ID, SIG, other, TS),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(&mut rx, "msg_other", SIG, BODY, TS),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            rx.check(Some(ID), Some(&(TS + 1).to_string()), Some(SIG), BODY, TS),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            check(&mut rx, ID, "v1,bm9wZQ==", BODY, TS),
            Err(Refusal::BadSignature)
        );
        // A refused delivery is not remembered: the genuine one still passes.
        assert_eq!(check(&mut rx, ID, &format!("v2,x {SIG}"), BODY, TS), Ok(()));
    }

    #[test]
    fn missing_headers_are_named() {
        let mut rx = Receiver::new(SECRET).unwrap();
        assert_eq!(
            rx.check(None, Some("1"), Some(SIG), BODY, TS),
            Err(Refusal::Missing("webhook-id"))
        );
        assert_eq!(
            rx.check(Some(ID), Some("soon"), Some(SIG), BODY, TS),
            Err(Refusal::BadTimestamp)
        );
    }
}
