//! `ebb inbox replay` (and `POST /api/inbox/{model}/replay`): a webhook model's dead
//! letters put back in its inbox.

use super::ApplyError;
use crate::plan::SyncPlan;
use crate::state::inbox::InboxStatus;
use crate::state::StateStore;

/// What `ebb inbox replay` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Dead letters put back as pending.
    pub requeued: u64,
    /// Events read again from refused requests and stored as pending.
    pub from_rejected: u64,
    /// Refused requests that still do not read (id and why).
    pub still_rejected: Vec<(String, String)>,
    /// Ids asked for that are not dead letters of the model.
    pub not_found: Vec<String>,
}

/// Puts dead letters of a webhook model back in its inbox (all of them, or those with
/// `ids`): an event that could not be mapped becomes pending again; a refused request is
/// read again with the model's current rules (its signature was checked when it came) and
/// its events are stored as pending.
pub async fn replay(store: &StateStore, plan: &SyncPlan, ids: Option<Vec<String>>) -> Result<Replayed, ApplyError> {
    let model = plan.name.clone();
    let store_err = |source| ApplyError::Store {
        model: model.clone(),
        source,
    };
    let rules = &plan
        .source
        .webhook
        .as_ref()
        .ok_or_else(|| ApplyError::NotWebhook { model: model.clone() })?
        .rules;
    store.inbox_init().await.map_err(store_err)?;
    let dead = store
        .inbox_list(
            &model,
            vec![InboxStatus::Dead, InboxStatus::Rejected],
            ids.clone(),
            i64::MAX,
        )
        .await
        .map_err(store_err)?;
    let mut out = Replayed::default();
    if let Some(ids) = &ids {
        out.not_found = ids
            .iter()
            .filter(|i| !dead.iter().any(|d| &d.event_id == *i))
            .cloned()
            .collect();
    }
    let requeue: Vec<i64> = dead
        .iter()
        .filter(|d| d.status == InboxStatus::Dead)
        .map(|d| d.seq)
        .collect();
    out.requeued = store
        .inbox_set_status(&model, requeue, InboxStatus::Pending)
        .await
        .map_err(store_err)?;
    let now = chrono::Utc::now();
    let mut replayed = Vec::new();
    for d in dead.iter().filter(|d| d.status == InboxStatus::Rejected) {
        match rules.parse(d.body.as_bytes(), None, Some(d.received), now) {
            Ok(events) => {
                let new: Vec<crate::state::inbox::NewEvent> = events
                    .into_iter()
                    .map(|e| crate::state::inbox::NewEvent {
                        model: model.clone(),
                        event_id: e.event_id,
                        event_type: e.event_type,
                        action: e.action.as_str().to_string(),
                        event_time: e.event_time,
                        received: d.received,
                        body: e.body,
                        status: InboxStatus::Pending,
                        reason: None,
                    })
                    .collect();
                let stored = store.inbox_put(new).await.map_err(store_err)?;
                out.from_rejected += stored.iter().filter(|s| **s).count() as u64;
                replayed.push(d.seq);
            }
            Err(why) => out.still_rejected.push((d.event_id.clone(), why.to_string())),
        }
    }
    store
        .inbox_set_status(&model, replayed, InboxStatus::Replayed)
        .await
        .map_err(store_err)?;
    Ok(out)
}
