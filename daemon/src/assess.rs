//! QA assessments of alerts: the review before release (21 CFR 211.192
//! practice). Each alert of a shipment that was not withdrawn needs a QA
//! user's assessment comment before a release can be signed.
//!
//! Kept in their own sled tree (`assessments`, keyed by alert id), written by
//! the API, so a review never races the evaluator, which owns the alerts.

use serde::{Deserialize, Serialize};

/// One QA assessment of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assessment {
    /// The alert.
    pub alert: u64,
    /// Its shipment.
    pub shipment: String,
    /// The assessor's user id.
    pub user: String,
    /// The assessor's full name.
    pub full_name: String,
    /// The assessment: impact on the product, and why.
    pub comment: String,
    /// When, ms.
    pub at_ms: i64,
}

/// The `assessments` tree.
#[derive(Debug, Clone)]
pub struct Assessments {
    tree: crate::kv::Tree,
}

impl Assessments {
    /// Opens the tree.
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Assessments> {
        Ok(Assessments {
            tree: db.open_tree("assessments")?,
        })
    }

    /// The assessment of an alert.
    pub fn get(&self, alert: u64) -> anyhow::Result<Option<Assessment>> {
        Ok(match self.tree.get(alert.to_be_bytes())? {
            Some(v) => Some(serde_json::from_slice(&v)?),
            None => None,
        })
    }

    /// Records an assessment; `false` if the alert was assessed already
    /// (an assessment is never replaced).
    pub fn insert_new(&self, a: &Assessment) -> anyhow::Result<bool> {
        Ok(self
            .tree
            .compare_and_swap(
                a.alert.to_be_bytes(),
                None::<&[u8]>,
                Some(serde_json::to_vec(a)?),
            )?
            .is_ok())
    }
}
