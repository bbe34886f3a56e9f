//! `conflicts:` of an outbound model as written (docs/conflicts.md): the two-way fields and
//! the policy that decides a conflict on them. Part of the model format
//! ([`super::model::ModelSpec`]); compiled by `plan::compile::conflicts`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Two-way fields and how a conflict on them is decided.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConflictsSpec {
    /// Who wins when both sides changed a two-way field: `warehouse_wins` (the default:
    /// today's behaviour, every decision recorded), `crm_wins` (the CRM's value stays),
    /// `newest_wins` (the newer modification time; a tie or a missing time goes to
    /// review), `manual_review` (the row is held until `ebb conflicts resolve`).
    #[serde(default)]
    pub policy: ConflictPolicy,
    /// The two-way fields: destination fields the mappings write. Default: every mapped
    /// field but the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// The source column holding the row's modification time in the warehouse (needed by
    /// `newest_wins`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_modified: Option<String>,
    /// The CRM field holding the record's modification time. Default: `LastModifiedDate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_modified: Option<String>,
    /// An inbound model of the same object whose table holds the CRM's current values:
    /// read instead of querying the CRM (no API calls). It must map the key field, every
    /// two-way field and `destination_modified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_state: Option<String>,
}

/// Who wins a conflict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    /// The warehouse's value is written (the default).
    #[default]
    WarehouseWins,
    /// The CRM's value stays: the field is not written.
    CrmWins,
    /// The side with the newer modification time wins; a tie or a missing time goes to
    /// manual review, as in the seed's `CUSTOMER_MASTER` view.
    NewestWins,
    /// Every conflicted row is held for a person to decide.
    ManualReview,
}

impl ConflictPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictPolicy::WarehouseWins => "warehouse_wins",
            ConflictPolicy::CrmWins => "crm_wins",
            ConflictPolicy::NewestWins => "newest_wins",
            ConflictPolicy::ManualReview => "manual_review",
        }
    }
}
