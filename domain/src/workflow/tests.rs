//! Given/when/then tests for every workflow transition and rejection.

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::testing::given;
use crate::DomainError;

fn wf() -> Uuid {
    Uuid::from_u128(100)
}

fn job(i: u32) -> Uuid {
    Uuid::from_u128(200 + u128::from(i))
}

fn step(t: &str, deps: Vec<u32>) -> StepSpec {
    StepSpec {
        job_type: t.into(),
        prompt: None,
        parameters: None,
        depends_on: deps,
    }
}

/// A diamond: 0 -> (1, 2) -> 3.
fn create_cmd() -> CreateWorkflow {
    CreateWorkflow {
        workflow_id: wf(),
        job_ids: (0..4).map(job).collect(),
        name: "diamond".into(),
        description: None,
        steps: vec![
            step("a", vec![]),
            step("b", vec![0]),
            step("c", vec![0]),
            step("d", vec![1, 2]),
        ],
        webhook_url: None,
    }
}

fn created() -> WorkflowEvent {
    let c = create_cmd();
    WorkflowEvent::WorkflowCreated(WorkflowCreated {
        workflow_id: c.workflow_id,
        name: c.name,
        description: None,
        steps: c.steps,
        job_ids: c.job_ids,
        webhook_url: None,
        total_steps: 4,
    })
}

fn started(i: u32) -> WorkflowEvent {
    WorkflowEvent::WorkflowStepStarted {
        workflow_id: wf(),
        step_index: i,
        job_id: job(i),
    }
}

fn step_done(i: u32, n: u32) -> WorkflowEvent {
    WorkflowEvent::WorkflowStepCompleted {
        workflow_id: wf(),
        step_index: i,
        job_id: job(i),
        result: json!({"step": i}),
        completed_steps: n,
    }
}

fn complete(i: u32) -> WorkflowCommand {
    WorkflowCommand::RecordStepCompleted {
        step_index: i,
        job_id: job(i),
        result: json!({"step": i}),
    }
}

fn invalid(command: &'static str, status: &str) -> DomainError {
    DomainError::InvalidTransition {
        kind: "workflow",
        command,
        status: status.into(),
    }
}

#[test]
fn create_emits_workflow_created() {
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(create_cmd()))
        .then(vec![created()]);
}

#[test]
fn create_twice_is_rejected() {
    given::<Workflow>(vec![created()])
        .when(WorkflowCommand::Create(create_cmd()))
        .then_err(DomainError::AlreadyExists { kind: "workflow" });
}

#[test]
fn create_validation() {
    let mut c = create_cmd();
    c.name = "  ".into();
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("name");

    let mut c = create_cmd();
    c.steps[2].depends_on = vec![2];
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("steps[2].depends_on");

    let mut c = create_cmd();
    c.steps[1].depends_on = vec![3];
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("steps[1].depends_on");

    let mut c = create_cmd();
    c.steps.clear();
    c.job_ids.clear();
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("steps");

    let mut c = create_cmd();
    c.steps = (0..51).map(|_| step("a", vec![])).collect();
    c.job_ids = (0..51).map(job).collect();
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("steps");

    let mut c = create_cmd();
    c.steps[0].job_type = "NOPE".into();
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("steps[0].type");

    let mut c = create_cmd();
    c.job_ids.pop();
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("job_ids");

    let mut c = create_cmd();
    c.webhook_url = Some("mailto:x".into());
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Create(c))
        .then_invalid_field("webhook_url");
}

#[test]
fn commands_on_a_missing_workflow_are_not_found() {
    given::<Workflow>(vec![])
        .when(WorkflowCommand::Cancel { reason: None })
        .then_err(DomainError::NotFound { kind: "workflow" });
}

#[test]
fn first_step_start_moves_to_running_and_repeats_are_no_ops() {
    given::<Workflow>(vec![created()])
        .when(WorkflowCommand::RecordStepStarted { step_index: 0 })
        .then(vec![started(0)]);
    let w = Workflow::from_events(&[created(), started(0)]);
    assert_eq!(w.status, Some(WorkflowStatus::Running));
    given::<Workflow>(vec![created(), started(0)])
        .when(WorkflowCommand::RecordStepStarted { step_index: 0 })
        .then(vec![]);
    given::<Workflow>(vec![created()])
        .when(WorkflowCommand::RecordStepStarted { step_index: 9 })
        .then_invalid_field("step_index");
}

#[test]
fn steps_complete_and_the_last_completes_the_workflow() {
    given::<Workflow>(vec![created(), started(0)])
        .when(complete(0))
        .then(vec![step_done(0, 1)]);
    let history = vec![
        created(),
        started(0),
        step_done(0, 1),
        started(1),
        step_done(1, 2),
        started(2),
        step_done(2, 3),
        started(3),
    ];
    let events = Workflow::from_events(&history)
        .decide(&complete(3))
        .unwrap();
    assert_eq!(events[0], step_done(3, 4));
    match &events[1] {
        WorkflowEvent::WorkflowCompleted {
            step_details,
            success_count,
            failed_count,
            ..
        } => {
            assert_eq!((*success_count, *failed_count), (4, 0));
            assert_eq!(step_details.len(), 4);
            assert_eq!(step_details[3].result, Some(json!({"step": 3})));
            assert_eq!(step_details[1].job_id, job(1));
        }
        other => panic!("{other:?}"),
    }
    let mut all = history.clone();
    all.extend(events);
    assert_eq!(
        Workflow::from_events(&all).status,
        Some(WorkflowStatus::Completed)
    );
}

#[test]
fn recording_a_step_twice_is_a_no_op() {
    given::<Workflow>(vec![created(), step_done(0, 1)])
        .when(complete(0))
        .then(vec![]);
}

#[test]
fn step_must_match_its_job() {
    given::<Workflow>(vec![created()])
        .when(WorkflowCommand::RecordStepCompleted {
            step_index: 0,
            job_id: job(1),
            result: json!(null),
        })
        .then_invalid_field("job_id");
}

#[test]
fn a_failed_step_fails_the_workflow() {
    given::<Workflow>(vec![created(), started(0)])
        .when(WorkflowCommand::RecordStepFailed {
            step_index: 0,
            job_id: job(0),
            error: json!({"code": "OOM"}),
        })
        .then(vec![
            WorkflowEvent::WorkflowStepFailed {
                workflow_id: wf(),
                step_index: 0,
                job_id: job(0),
                error: json!({"code": "OOM"}),
            },
            WorkflowEvent::WorkflowFailed {
                workflow_id: wf(),
                error: json!({"code": "OOM"}),
                failed_step: 0,
            },
        ]);
}

#[test]
fn terminal_workflows_reject_new_step_outcomes_and_cancel() {
    let cancelled = WorkflowEvent::WorkflowCancelled {
        workflow_id: wf(),
        reason: None,
    };
    given::<Workflow>(vec![created(), cancelled.clone()])
        .when(complete(1))
        .then_err(invalid("complete a step of", "cancelled"));
    given::<Workflow>(vec![created(), cancelled.clone()])
        .when(WorkflowCommand::RecordStepStarted { step_index: 1 })
        .then_err(invalid("start a step of", "cancelled"));
    given::<Workflow>(vec![created(), cancelled])
        .when(WorkflowCommand::Cancel { reason: None })
        .then_err(invalid("cancel", "cancelled"));
}

#[test]
fn cancel_pending_or_running() {
    let cancelled = WorkflowEvent::WorkflowCancelled {
        workflow_id: wf(),
        reason: Some("user".into()),
    };
    given::<Workflow>(vec![created()])
        .when(WorkflowCommand::Cancel {
            reason: Some("user".into()),
        })
        .then(vec![cancelled.clone()]);
    given::<Workflow>(vec![created(), started(0)])
        .when(WorkflowCommand::Cancel {
            reason: Some("user".into()),
        })
        .then(vec![cancelled]);
}

#[test]
fn dependents_and_lookup() {
    let w = Workflow::from_events(&[created()]);
    assert_eq!(w.dependents_of(0), vec![1, 2]);
    assert_eq!(w.dependents_of(1), vec![3]);
    assert_eq!(w.step_of(job(2)), Some(2));
    assert_eq!(w.job_id(3), Some(job(3)));
}
