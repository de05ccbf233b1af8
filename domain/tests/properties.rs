//! Property tests: for random command sequences, folding the accepted events from scratch
//! equals the step-by-step state, versions stay contiguous, and terminal states accept
//! nothing.

// Tests may unwrap: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use jobsource_domain::job::{
    AssignJob, CancelJob, CompleteJob, FailJob, Job, JobCommand, JobError, ReportProgress,
    SubmitJob,
};
use jobsource_domain::workflow::{CreateWorkflow, StepSpec, Workflow, WorkflowCommand};
use jobsource_domain::DomainError;
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

fn job_command() -> impl Strategy<Value = JobCommand> {
    prop_oneof![
        (any::<bool>(), 0u8..=100, 0u32..4).prop_map(|(deps, priority, max_retries)| {
            JobCommand::Submit(SubmitJob {
                job_id: Uuid::from_u128(1),
                job_type: "render".into(),
                priority,
                max_retries,
                depends_on: if deps {
                    vec![Uuid::from_u128(2)]
                } else {
                    vec![]
                },
                ..Default::default()
            })
        }),
        Just(JobCommand::Release),
        Just(JobCommand::Assign(AssignJob {
            lease_expires_at: None,
            worker_id: "w".into(),
            machine_id: "m".into()
        })),
        (0u8..=100).prop_map(|p| JobCommand::ReportProgress(ReportProgress {
            worker_id: None,
            progress: p,
            stage: None,
            message: None
        })),
        Just(JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: json!(1),
            duration_ms: None
        })),
        any::<bool>().prop_map(|retryable| JobCommand::Fail(FailJob {
            retry_at: None,
            worker_id: None,
            error: JobError {
                code: "E".into(),
                message: "m".into()
            },
            retryable
        })),
        Just(JobCommand::Cancel(CancelJob::default())),
    ]
}

fn workflow_command() -> impl Strategy<Value = WorkflowCommand> {
    prop_oneof![
        Just(WorkflowCommand::Create(CreateWorkflow {
            workflow_id: Uuid::from_u128(9),
            job_ids: (0..3).map(|i| Uuid::from_u128(10 + i)).collect(),
            name: "w".into(),
            description: None,
            steps: vec![
                StepSpec {
                    job_type: "a".into(),
                    prompt: None,
                    parameters: None,
                    depends_on: vec![]
                },
                StepSpec {
                    job_type: "b".into(),
                    prompt: None,
                    parameters: None,
                    depends_on: vec![0]
                },
                StepSpec {
                    job_type: "c".into(),
                    prompt: None,
                    parameters: None,
                    depends_on: vec![0, 1]
                },
            ],
            webhook_url: None,
        })),
        (0u32..3).prop_map(|i| WorkflowCommand::RecordStepStarted { step_index: i }),
        (0u32..3).prop_map(|i| WorkflowCommand::RecordStepCompleted {
            step_index: i,
            job_id: Uuid::from_u128(10 + u128::from(i)),
            result: json!(i)
        }),
        (0u32..3).prop_map(|i| WorkflowCommand::RecordStepFailed {
            step_index: i,
            job_id: Uuid::from_u128(10 + u128::from(i)),
            error: json!("boom")
        }),
        Just(WorkflowCommand::Cancel { reason: None }),
    ]
}

proptest! {
    #[test]
    fn job_fold_equals_stepwise_state(commands in prop::collection::vec(job_command(), 0..60)) {
        let mut state = Job::default();
        let mut accepted = Vec::new();
        for c in &commands {
            let was_terminal = state.is_terminal();
            match state.decide(c) {
                Ok(events) => {
                    prop_assert!(!was_terminal, "terminal job accepted {c:?}");
                    for e in &events {
                        state.apply(e);
                    }
                    accepted.extend(events);
                }
                Err(e) => {
                    if was_terminal {
                        prop_assert!(
                            matches!(e, DomainError::InvalidTransition { .. } | DomainError::AlreadyExists { .. }),
                            "terminal job answered {e:?}"
                        );
                    }
                }
            }
            prop_assert_eq!(state.version, accepted.len() as u64);
        }
        prop_assert_eq!(Job::from_events(&accepted), state.clone());
        if let Some(s) = state.status {
            // Retries never exceed the budget.
            prop_assert!(state.retry_count <= state.max_retries + 1);
            prop_assert!(state.progress <= 100);
            let _ = s;
        }
    }

    #[test]
    fn workflow_fold_equals_stepwise_state(commands in prop::collection::vec(workflow_command(), 0..40)) {
        let mut state = Workflow::default();
        let mut accepted = Vec::new();
        for c in &commands {
            let was_terminal = state.is_terminal();
            if let Ok(events) = state.decide(c) {
                if was_terminal {
                    // Only idempotent re-deliveries are accepted, and they add nothing.
                    prop_assert!(events.is_empty(), "terminal workflow accepted {c:?}");
                }
                for e in &events {
                    state.apply(e);
                }
                accepted.extend(events);
            }
            prop_assert_eq!(state.version, accepted.len() as u64);
        }
        prop_assert_eq!(Workflow::from_events(&accepted), state.clone());
        prop_assert!(state.completed_steps as usize <= state.steps.len());
    }
}
