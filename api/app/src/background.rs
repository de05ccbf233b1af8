//! Status rows of the background subscribers that are not projections: the orchestrator
//! reports through [`StatusSource`] like the webhook enqueuer and the seed bus do.

use crate::orchestrator::Orchestrator;
use crate::status::{ProjectionStatus, StatusSource};

#[async_trait::async_trait]
impl StatusSource for Orchestrator {
    async fn status_rows(&self) -> Vec<ProjectionStatus> {
        self.status()
            .await
            .into_iter()
            .map(
                |(partition, checkpoint, state, last_error)| ProjectionStatus {
                    projection: "orchestrator".into(),
                    partition,
                    checkpoint,
                    lag: 0,
                    state,
                    last_error,
                },
            )
            .collect()
    }
}
