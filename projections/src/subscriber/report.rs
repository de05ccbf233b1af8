//! Status rows of a subscriber: checkpoint, lag, state and error per partition.

use jobsource_eventstore::Position;

use super::runtime::{Phase, Subscriber};
use super::{Recorded, StatusRow};

impl Subscriber {
    /// Status of every partition: checkpoint, lag (capped at `lag_cap`), state, error.
    pub async fn status(&self, lag_cap: usize) -> Vec<StatusRow> {
        let name = self.name().to_owned();
        let (recorded, store_error) = match self.status.load(&name).await {
            Ok(r) => (r, None),
            Err(e) => (
                Default::default(),
                Some(format!("cannot read the status: {e}")),
            ),
        };
        let head = self.store.head().await.ok();
        let holders = match &self.claims {
            Some(c) => c.holders().await.unwrap_or_default(),
            None => Vec::new(),
        };
        let phase = self.phase();
        let mut rows = Vec::with_capacity(self.locks.len());
        for p in 0..self.store.partitions() {
            let live = self
                .live()
                .partitions
                .get(p as usize)
                .cloned()
                .unwrap_or_default();
            let (checkpoint, mut last_error) = match self.handler.checkpoint(p).await {
                Ok(c) => (c, live.error.clone()),
                Err(e) => (
                    live.checkpoint,
                    Some(format!("cannot read the checkpoint: {e}")),
                ),
            };
            let lag = match &head {
                Some(h) if checkpoint >= h.after(p) => 0,
                _ => self
                    .store
                    .read_partition(p, checkpoint, lag_cap)
                    .await
                    // An unreadable entry (the likely cause of a stall) counts as the cap.
                    .map_or(lag_cap as u64, |e| e.len() as u64),
            };
            let (state, error_position) = match recorded.get(&p) {
                Some(Recorded::Stalled { error, position }) => {
                    last_error = Some(error.clone());
                    ("stalled", position.clone())
                }
                _ if phase == Phase::Stopped => ("stopped", None),
                _ if phase == Phase::Running => ("running", None),
                Some(r) => (r.as_str(), None),
                None => ("running", None),
            };
            if last_error.is_none() {
                last_error = store_error.clone();
            }
            let holder = holders.get(p as usize).cloned().flatten();
            rows.push(StatusRow {
                owner: holder.as_ref().map(|h| h.owner.clone()),
                lease_expires_at: holder.map(|h| h.expires_at_ms),
                consumer: name.clone(),
                partition: p,
                checkpoint: Position::new(p, checkpoint).to_string(),
                lag,
                state: state.to_owned(),
                last_error,
                error_position,
            });
        }
        rows
    }
}
