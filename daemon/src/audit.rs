//! The audit trail: append-only and hash-chained (21 CFR 11.10(e)).
//!
//! Every entry records who did what to which subject, and when, and carries
//! the SHA-256 of the entry before it; its own hash covers all of that. Editing
//! an entry breaks its hash, deleting one breaks the sequence and the chain,
//! and [`Audit::verify`] names the first entry where that happened. The head
//! hash it reports can be written down elsewhere, so even a truncation of the
//! newest entries can be detected against it.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One entry.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the trail, from 1, without holes.
    pub seq: u64,
    /// When, ms since the Unix epoch (the daemon's clock).
    pub at_ms: i64,
    /// Who: the person (or `daemon` for automatic actions).
    pub who: String,
    /// What, e.g. `shipment.create`, `alert.ack`, `device.add`.
    pub action: String,
    /// Which subject: a shipment id, an alert id, a device id.
    pub subject: String,
    /// The change itself (new values; old values where something was replaced).
    pub details: serde_json::Value,
    /// Hash of the previous entry (64 zeros for the first).
    pub prev: String,
    /// The authenticated person (absent in entries written before accounts
    /// existed, whose `who` is a name someone typed, and in the daemon's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<AuditUser>,
    /// SHA-256 over all the fields above, hex.
    pub hash: String,
}

/// The authenticated person behind an entry.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditUser {
    /// User id (login name).
    pub id: String,
    /// Full name.
    pub full_name: String,
    /// How they were authenticated: `session`, `token <id>`, `legacy shared token`.
    pub via: String,
}

impl From<&crate::users::Actor> for AuditUser {
    /// What the audit trail records about an authenticated person.
    fn from(a: &crate::users::Actor) -> Self {
        use crate::users::Via;
        AuditUser {
            id: a.user.clone(),
            full_name: a.full_name.clone(),
            via: match &a.via {
                Via::Session => "session".into(),
                Via::Token(id) => format!("token {id}"),
                Via::LegacyToken => "legacy shared token".into(),
            },
        }
    }
}

impl AuditEntry {
    /// Written before accounts existed: `who` is a typed name, not an
    /// authenticated identity (the daemon's own entries are not legacy).
    pub fn is_legacy(&self) -> bool {
        self.user.is_none() && self.who != "daemon"
    }

    /// The entry as the API shows it: with `"identity": "authenticated" |
    /// "legacy typed name" | "daemon"`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["identity"] = serde_json::json!(if self.user.is_some() {
            "authenticated"
        } else if self.is_legacy() {
            "legacy typed name"
        } else {
            "daemon"
        });
        v
    }
}

/// What [`Audit::verify`] found.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// Entries checked.
    pub entries: u64,
    /// No problem found.
    pub ok: bool,
    /// Hash of the newest entry: record it elsewhere to detect truncation later.
    pub head: String,
    /// Each problem, naming the entry.
    pub problems: Vec<String>,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hash_of(e: &AuditEntry) -> String {
    // serde_json writes struct fields in declaration order and `Value` maps
    // sorted, so this encoding is deterministic. Entries without a user
    // (written before accounts existed, and the daemon's own) hash as they
    // always did, so old trails stay valid; the user is covered when present.
    let body = match &e.user {
        None => serde_json::json!([
            e.seq, e.at_ms, e.who, e.action, e.subject, e.details, e.prev
        ]),
        Some(u) => serde_json::json!([
            e.seq, e.at_ms, e.who, e.action, e.subject, e.details, e.prev, u
        ]),
    };
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

/// The audit trail in its sled tree.
#[derive(Debug)]
pub struct Audit {
    tree: crate::kv::Tree,
    append: Mutex<()>,
}

impl Audit {
    /// Opens the `audit` tree.
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Self> {
        Ok(Audit {
            tree: db.open_tree("audit")?,
            append: Mutex::new(()),
        })
    }

    /// Appends an entry by the daemon itself or a tool without an account
    /// (not yet durable: the caller syncs the store).
    pub fn append(
        &self,
        at_ms: i64,
        who: &str,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> anyhow::Result<AuditEntry> {
        self.append_entry(at_ms, who, None, action, subject, details)
    }

    /// Appends an entry by an authenticated person.
    pub fn append_by(
        &self,
        at_ms: i64,
        actor: &crate::users::Actor,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> anyhow::Result<AuditEntry> {
        self.append_entry(
            at_ms,
            &actor.user,
            Some(AuditUser::from(actor)),
            action,
            subject,
            details,
        )
    }

    /// Appends an entry with an explicit identity (e.g. the gateway's
    /// command line adding the first admin).
    pub fn append_entry(
        &self,
        at_ms: i64,
        who: &str,
        user: Option<AuditUser>,
        action: &str,
        subject: &str,
        details: serde_json::Value,
    ) -> anyhow::Result<AuditEntry> {
        let _guard = self.append.lock().unwrap_or_else(|p| p.into_inner());
        // Insert-if-new at the next sequence number: daemons sharing one
        // database (PostgreSQL) may append at once; the one that loses reads
        // the new head and chains after it, so no entry is overwritten and
        // the chain never forks.
        loop {
            let (seq, prev) = match self.tree.last()? {
                Some((_, v)) => {
                    let last: AuditEntry = serde_json::from_slice(&v)?;
                    (last.seq + 1, last.hash)
                }
                None => (1, GENESIS.to_string()),
            };
            let mut e = AuditEntry {
                seq,
                at_ms,
                who: who.to_string(),
                action: action.to_string(),
                subject: subject.to_string(),
                details: details.clone(),
                prev,
                user: user.clone(),
                hash: String::new(),
            };
            e.hash = hash_of(&e);
            if self
                .tree
                .compare_and_swap(
                    seq.to_be_bytes(),
                    None::<&[u8]>,
                    Some(serde_json::to_vec(&e)?),
                )?
                .is_ok()
            {
                return Ok(e);
            }
        }
    }

    /// Entries after `after_seq`, oldest first, at most `limit`.
    pub fn list(&self, after_seq: u64, limit: usize) -> anyhow::Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for kv in self.tree.range((after_seq + 1).to_be_bytes()..).take(limit) {
            let (_, v) = kv?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    /// Entries about one subject, oldest first.
    pub fn for_subject(&self, subject: &str) -> anyhow::Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for kv in self.tree.iter() {
            let (_, v) = kv?;
            let e: AuditEntry = serde_json::from_slice(&v)?;
            if e.subject == subject {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Walks the whole trail and reports every broken link.
    pub fn verify(&self) -> anyhow::Result<Verification> {
        let mut problems = Vec::new();
        let mut prev = GENESIS.to_string();
        let mut expect = 1u64;
        let mut n = 0;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            n += 1;
            let key_seq = k
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            let e: AuditEntry = match serde_json::from_slice(&v) {
                Ok(e) => e,
                Err(err) => {
                    problems.push(format!("entry at key {key_seq}: unreadable: {err}"));
                    continue;
                }
            };
            if e.seq != key_seq {
                problems.push(format!("entry {key_seq}: claims to be entry {}", e.seq));
            }
            if e.seq != expect {
                problems.push(format!(
                    "entry {}: expected entry {expect} here: entries {expect}..{} are missing",
                    e.seq,
                    e.seq.saturating_sub(1)
                ));
            }
            if e.prev != prev {
                problems.push(format!(
                    "entry {}: does not chain to the entry before it (deleted or edited entry before it)",
                    e.seq
                ));
            }
            if hash_of(&e) != e.hash {
                problems.push(format!(
                    "entry {} ({} by {}): edited after it was written",
                    e.seq, e.action, e.who
                ));
            }
            prev = e.hash.clone();
            expect = e.seq + 1;
        }
        Ok(Verification {
            entries: n,
            ok: problems.is_empty(),
            head: prev,
            problems,
        })
    }

    /// Test and tooling hook: raw access to the tree (to prove that tampering is found).
    pub fn tree(&self) -> &crate::kv::Tree {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trail() -> (tempfile::TempDir, Audit) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let a = Audit::open(&db).unwrap();
        for i in 0..5 {
            a.append(
                1000 + i,
                "alice",
                "shipment.eta",
                "S-1",
                serde_json::json!({ "eta_ms": i }),
            )
            .unwrap();
        }
        (dir, a)
    }

    #[test]
    fn intact_trail_verifies() {
        let (_d, a) = trail();
        let v = a.verify().unwrap();
        assert!(v.ok, "{:?}", v.problems);
        assert_eq!(v.entries, 5);
        assert_eq!(v.head, a.list(4, 1).unwrap()[0].hash);
    }

    #[test]
    fn an_edited_entry_is_found() {
        let (_d, a) = trail();
        let mut e = a.list(2, 1).unwrap().remove(0);
        e.who = "mallory".into();
        a.tree()
            .insert(3u64.to_be_bytes(), serde_json::to_vec(&e).unwrap())
            .unwrap();
        let v = a.verify().unwrap();
        assert!(!v.ok);
        assert!(
            v.problems
                .iter()
                .any(|p| p.starts_with("entry 3") && p.contains("edited")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn an_edit_with_a_recomputed_hash_breaks_the_next_link() {
        let (_d, a) = trail();
        let mut e = a.list(2, 1).unwrap().remove(0);
        e.details = serde_json::json!({ "eta_ms": 999 });
        e.hash = hash_of(&e);
        a.tree()
            .insert(3u64.to_be_bytes(), serde_json::to_vec(&e).unwrap())
            .unwrap();
        let v = a.verify().unwrap();
        assert!(
            v.problems
                .iter()
                .any(|p| p.starts_with("entry 4") && p.contains("chain")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn a_deleted_entry_is_found() {
        let (_d, a) = trail();
        a.tree().remove(2u64.to_be_bytes()).unwrap();
        let v = a.verify().unwrap();
        assert!(!v.ok);
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("entries 2..2 are missing")),
            "{:?}",
            v.problems
        );
    }
}
