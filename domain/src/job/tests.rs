//! Given/when/then tests for every job transition and rejection.

use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::testing::given;
use crate::DomainError;

fn id() -> Uuid {
    Uuid::from_u128(1)
}

fn submit_cmd() -> SubmitJob {
    SubmitJob {
        job_id: id(),
        job_type: "upscale".into(),
        ..Default::default()
    }
}

fn submitted(depends_on: Vec<Uuid>) -> JobEvent {
    let waiting = !depends_on.is_empty();
    JobEvent::JobSubmitted(JobSubmitted {
        available_at: None,
        job_id: id(),
        job_type: "upscale".into(),
        prompt: None,
        parameters: Default::default(),
        priority: 50,
        requirements: Requirements {
            capabilities: vec!["upscale".into()],
            gpu_memory: None,
        },
        webhook_url: None,
        workflow_id: None,
        step_index: None,
        depends_on,
        max_retries: 3,
        status: if waiting {
            JobStatus::Waiting
        } else {
            JobStatus::Pending
        },
    })
}

fn assigned(attempt: u32) -> JobEvent {
    JobEvent::JobAssigned {
        lease_expires_at: None,
        job_id: id(),
        worker_id: "w".into(),
        machine_id: "m".into(),
        attempt,
    }
}

fn progress(p: u8) -> JobEvent {
    JobEvent::JobProgress {
        job_id: id(),
        progress: p,
        stage: None,
        message: None,
    }
}

fn assign() -> JobCommand {
    JobCommand::Assign(AssignJob {
        lease_expires_at: None,
        worker_id: "w".into(),
        machine_id: "m".into(),
    })
}

fn fail(retryable: bool) -> JobCommand {
    JobCommand::Fail(FailJob {
        retry_at: None,
        worker_id: None,
        error: JobError {
            code: "OOM".into(),
            message: "out of memory".into(),
        },
        retryable,
    })
}

fn failed(retry_count: u32, will_retry: bool, retryable: bool) -> JobEvent {
    JobEvent::JobFailed {
        available_at: None,
        job_id: id(),
        error: JobError {
            code: "OOM".into(),
            message: "out of memory".into(),
        },
        retryable,
        retry_count,
        will_retry,
    }
}

fn invalid(command: &'static str, status: &str) -> DomainError {
    DomainError::InvalidTransition {
        kind: "job",
        command,
        status: status.into(),
    }
}

fn completed() -> JobEvent {
    JobEvent::JobCompleted {
        job_id: id(),
        result: json!({"ok": true}),
        duration_ms: None,
    }
}

fn cancelled() -> JobEvent {
    JobEvent::JobCancelled {
        job_id: id(),
        reason: None,
    }
}

#[test]
fn submit_without_dependencies_is_pending() {
    given::<Job>(vec![])
        .when(JobCommand::Submit(submit_cmd()))
        .then(vec![submitted(vec![])]);
}

#[test]
fn submit_with_dependencies_is_waiting() {
    let dep = Uuid::from_u128(2);
    given::<Job>(vec![])
        .when(JobCommand::Submit(SubmitJob {
            depends_on: vec![dep],
            ..submit_cmd()
        }))
        .then(vec![submitted(vec![dep])]);
}

#[test]
fn submit_keeps_explicit_requirements() {
    let req = Requirements {
        capabilities: vec!["gpu".into()],
        gpu_memory: Some(24.0),
    };
    let events = Job::default()
        .decide(&JobCommand::Submit(SubmitJob {
            requirements: Some(req.clone()),
            ..submit_cmd()
        }))
        .unwrap();
    match &events[0] {
        JobEvent::JobSubmitted(s) => assert_eq!(s.requirements, req),
        other => panic!("{other:?}"),
    }
}

#[test]
fn submit_twice_is_rejected() {
    given::<Job>(vec![submitted(vec![])])
        .when(JobCommand::Submit(submit_cmd()))
        .then_err(DomainError::AlreadyExists { kind: "job" });
}

#[test]
fn submit_validation_names_each_field() {
    let cases: Vec<(SubmitJob, &str)> = vec![
        (
            SubmitJob {
                job_type: "Bad Type".into(),
                ..submit_cmd()
            },
            "type",
        ),
        (
            SubmitJob {
                job_type: "".into(),
                ..submit_cmd()
            },
            "type",
        ),
        (
            SubmitJob {
                priority: 101,
                ..submit_cmd()
            },
            "priority",
        ),
        (
            SubmitJob {
                max_retries: 101,
                ..submit_cmd()
            },
            "max_retries",
        ),
        (
            SubmitJob {
                depends_on: vec![id()],
                ..submit_cmd()
            },
            "depends_on",
        ),
        (
            SubmitJob {
                depends_on: vec![Uuid::from_u128(5), Uuid::from_u128(5)],
                ..submit_cmd()
            },
            "depends_on",
        ),
        (
            SubmitJob {
                webhook_url: Some("ftp://x".into()),
                ..submit_cmd()
            },
            "webhook_url",
        ),
        (
            SubmitJob {
                step_index: Some(1),
                ..submit_cmd()
            },
            "step_index",
        ),
        (
            SubmitJob {
                job_id: Uuid::nil(),
                ..submit_cmd()
            },
            "job_id",
        ),
    ];
    for (cmd, field) in cases {
        given::<Job>(vec![])
            .when(JobCommand::Submit(cmd))
            .then_invalid_field(field);
    }
}

#[test]
fn commands_on_a_missing_job_are_not_found() {
    for cmd in [
        JobCommand::Release,
        assign(),
        JobCommand::Cancel(CancelJob::default()),
    ] {
        given::<Job>(vec![])
            .when(cmd)
            .then_err(DomainError::NotFound { kind: "job" });
    }
}

#[test]
fn release_moves_waiting_to_pending() {
    given::<Job>(vec![submitted(vec![Uuid::from_u128(2)])])
        .when(JobCommand::Release)
        .then(vec![JobEvent::JobReleased { job_id: id() }]);
    let job = Job::from_events(&[
        submitted(vec![Uuid::from_u128(2)]),
        JobEvent::JobReleased { job_id: id() },
    ]);
    assert_eq!(job.status, Some(JobStatus::Pending));
}

#[test]
fn release_is_only_for_waiting_jobs() {
    given::<Job>(vec![submitted(vec![])])
        .when(JobCommand::Release)
        .then_err(invalid("release", "pending"));
}

#[test]
fn assign_pending_job_counts_attempts() {
    given::<Job>(vec![submitted(vec![])])
        .when(assign())
        .then(vec![assigned(1)]);
    given::<Job>(vec![submitted(vec![]), assigned(1), failed(1, true, true)])
        .when(assign())
        .then(vec![assigned(2)]);
}

#[test]
fn assign_rejections() {
    given::<Job>(vec![submitted(vec![Uuid::from_u128(2)])])
        .when(assign())
        .then_err(invalid("assign", "waiting"));
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(assign())
        .then_err(invalid("assign", "assigned"));
    given::<Job>(vec![submitted(vec![])])
        .when(JobCommand::Assign(AssignJob {
            lease_expires_at: None,
            worker_id: " ".into(),
            machine_id: "m".into(),
        }))
        .then_invalid_field("worker_id");
}

#[test]
fn progress_moves_assigned_to_running() {
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::ReportProgress(ReportProgress {
            worker_id: None,
            progress: 10,
            stage: None,
            message: None,
        }))
        .then(vec![progress(10)]);
    let job = Job::from_events(&[submitted(vec![]), assigned(1), progress(10)]);
    assert_eq!(job.status, Some(JobStatus::Running));
}

#[test]
fn progress_never_decreases_within_an_attempt() {
    given::<Job>(vec![submitted(vec![]), assigned(1), progress(40)])
        .when(JobCommand::ReportProgress(ReportProgress {
            worker_id: None,
            progress: 30,
            stage: None,
            message: None,
        }))
        .then_invalid_field("progress");
    // Equal is fine (a repeated report).
    given::<Job>(vec![submitted(vec![]), assigned(1), progress(40)])
        .when(JobCommand::ReportProgress(ReportProgress {
            worker_id: None,
            progress: 40,
            stage: None,
            message: None,
        }))
        .then(vec![progress(40)]);
    // A new attempt starts again from 0.
    given::<Job>(vec![
        submitted(vec![]),
        assigned(1),
        progress(90),
        failed(1, true, true),
        assigned(2),
    ])
    .when(JobCommand::ReportProgress(ReportProgress {
        worker_id: None,
        progress: 5,
        stage: None,
        message: None,
    }))
    .then(vec![progress(5)]);
}

#[test]
fn progress_rejections() {
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::ReportProgress(ReportProgress {
            worker_id: None,
            progress: 101,
            stage: None,
            message: None,
        }))
        .then_invalid_field("progress");
    given::<Job>(vec![submitted(vec![])])
        .when(JobCommand::ReportProgress(ReportProgress {
            worker_id: None,
            progress: 1,
            stage: None,
            message: None,
        }))
        .then_err(invalid("report progress of", "pending"));
}

#[test]
fn complete_from_assigned_or_running() {
    let cmd = || {
        JobCommand::Complete(CompleteJob {
            worker_id: None,
            result: json!({"ok": true}),
            duration_ms: None,
        })
    };
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(cmd())
        .then(vec![completed()]);
    given::<Job>(vec![submitted(vec![]), assigned(1), progress(50)])
        .when(cmd())
        .then(vec![completed()]);
    given::<Job>(vec![submitted(vec![])])
        .when(cmd())
        .then_err(invalid("complete", "pending"));
    given::<Job>(vec![submitted(vec![]), assigned(1), completed()])
        .when(cmd())
        .then_err(invalid("complete", "completed"));
}

#[test]
fn retryable_failures_retry_until_the_budget_is_spent() {
    let mut history = vec![submitted(vec![])];
    for n in 1..=3 {
        history.push(assigned(n));
        given::<Job>(history.clone())
            .when(fail(true))
            .then(vec![failed(n, true, true)]);
        history.push(failed(n, true, true));
        assert_eq!(Job::from_events(&history).status, Some(JobStatus::Pending));
    }
    history.push(assigned(4));
    given::<Job>(history.clone())
        .when(fail(true))
        .then(vec![failed(4, false, true)]);
    history.push(failed(4, false, true));
    assert_eq!(Job::from_events(&history).status, Some(JobStatus::Failed));
}

#[test]
fn non_retryable_failure_is_terminal() {
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(fail(false))
        .then(vec![failed(1, false, false)]);
}

#[test]
fn fail_rejections() {
    given::<Job>(vec![submitted(vec![])])
        .when(fail(true))
        .then_err(invalid("fail", "pending"));
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::Fail(FailJob {
            retry_at: None,
            worker_id: None,
            error: JobError {
                code: "".into(),
                message: "x".into(),
            },
            retryable: true,
        }))
        .then_invalid_field("error.code");
}

#[test]
fn cancel_waiting_or_pending_only() {
    let cmd = || JobCommand::Cancel(CancelJob::default());
    given::<Job>(vec![submitted(vec![])])
        .when(cmd())
        .then(vec![cancelled()]);
    given::<Job>(vec![submitted(vec![Uuid::from_u128(2)])])
        .when(cmd())
        .then(vec![cancelled()]);
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(cmd())
        .then_err(invalid("cancel", "assigned"));
    given::<Job>(vec![submitted(vec![]), assigned(1), progress(3)])
        .when(cmd())
        .then_err(invalid("cancel", "running"));
    given::<Job>(vec![submitted(vec![]), cancelled()])
        .when(cmd())
        .then_err(invalid("cancel", "cancelled"));
}

#[test]
fn events_serialize_as_type_and_data() {
    let v = serde_json::to_value(assigned(1)).unwrap();
    assert_eq!(v["type"], "job_assigned");
    assert_eq!(v["data"]["attempt"], 1);
    assert_eq!(v["data"]["job_id"], id().to_string());
    let back: JobEvent = serde_json::from_value(v).unwrap();
    assert_eq!(back, assigned(1));
    assert_eq!(assigned(1).event_type(), "job_assigned");
    assert_eq!(submitted(vec![]).schema(), 2);
}

// ---- leases, delays, backoff ----

fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("valid time")
}

fn expire(attempt: u32, retry_at: Option<chrono::DateTime<chrono::Utc>>) -> JobCommand {
    JobCommand::ExpireLease(ExpireLease {
        attempt,
        retry_at,
        reason: None,
        force: false,
    })
}

fn expired(
    attempt: u32,
    retry_count: u32,
    will_retry: bool,
    available_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Vec<JobEvent> {
    vec![
        JobEvent::JobLeaseExpired {
            job_id: id(),
            attempt,
            worker_id: "w".into(),
            machine_id: "m".into(),
            will_retry,
        },
        JobEvent::JobFailed {
            job_id: id(),
            error: JobError {
                code: LEASE_EXPIRED.into(),
                message: format!("attempt {attempt} of worker w: lease expired"),
            },
            retryable: true,
            retry_count,
            will_retry,
            available_at,
        },
    ]
}

#[test]
fn assign_carries_the_lease_deadline() {
    given::<Job>(vec![submitted(vec![])])
        .when(JobCommand::Assign(AssignJob {
            worker_id: "w".into(),
            machine_id: "m".into(),
            lease_expires_at: Some(at(300)),
        }))
        .then(vec![JobEvent::JobAssigned {
            job_id: id(),
            worker_id: "w".into(),
            machine_id: "m".into(),
            attempt: 1,
            lease_expires_at: Some(at(300)),
        }]);
}

#[test]
fn an_expired_lease_is_a_failed_attempt_that_retries_after_the_backoff() {
    given::<Job>(vec![submitted(vec![]), assigned(1), progress(10)])
        .when(expire(1, Some(at(2))))
        .then(expired(1, 1, true, Some(at(2))));
}

#[test]
fn expiries_exhaust_the_retries_into_lease_expired() {
    let mut history = vec![submitted(vec![])];
    for attempt in 1..=3 {
        history.push(assigned(attempt));
        history.extend(expired(attempt, attempt, true, None));
    }
    history.push(assigned(4));
    given::<Job>(history.clone())
        .when(expire(4, Some(at(2))))
        .then(expired(4, 4, false, None));
    history.extend(expired(4, 4, false, None));
    let job = Job::from_events(&history);
    assert_eq!(job.status, Some(JobStatus::Failed));
    assert_eq!(job.error.map(|e| e.code), Some(LEASE_EXPIRED.to_owned()));
}

#[test]
fn a_stale_expiry_of_an_earlier_attempt_changes_nothing() {
    let mut history = vec![submitted(vec![]), assigned(1)];
    history.extend(expired(1, 1, true, None));
    history.push(assigned(2));
    given::<Job>(history)
        .when(expire(1, None))
        .then_err(invalid("expire the lease of", "assigned"));
    given::<Job>(vec![submitted(vec![])])
        .when(expire(1, None))
        .then_err(invalid("expire the lease of", "pending"));
}

#[test]
fn reports_from_a_worker_that_does_not_hold_the_job_are_refused() {
    let not_holder = DomainError::NotHolder {
        kind: "job",
        worker_id: "other".into(),
        status: "assigned".into(),
    };
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::ReportProgress(ReportProgress {
            worker_id: Some("other".into()),
            progress: 5,
            stage: None,
            message: None,
        }))
        .then_err(not_holder.clone());
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::Complete(CompleteJob {
            worker_id: Some("other".into()),
            ..Default::default()
        }))
        .then_err(not_holder);
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::Complete(CompleteJob {
            worker_id: Some("w".into()),
            result: json!({"ok": true}),
            duration_ms: None,
        }))
        .then(vec![completed()]);
}

#[test]
fn a_retryable_failure_records_when_the_retry_is_claimable() {
    given::<Job>(vec![submitted(vec![]), assigned(1)])
        .when(JobCommand::Fail(FailJob {
            retry_at: Some(at(1)),
            worker_id: None,
            error: JobError {
                code: "OOM".into(),
                message: "out of memory".into(),
            },
            retryable: true,
        }))
        .then(vec![JobEvent::JobFailed {
            available_at: Some(at(1)),
            job_id: id(),
            error: JobError {
                code: "OOM".into(),
                message: "out of memory".into(),
            },
            retryable: true,
            retry_count: 1,
            will_retry: true,
        }]);
}

#[test]
fn a_delayed_submission_records_its_available_time() {
    let events = Job::default()
        .decide(&JobCommand::Submit(SubmitJob {
            available_at: Some(at(60)),
            ..submit_cmd()
        }))
        .expect("a delayed submission is valid");
    let job = Job::from_events(&events);
    assert_eq!(job.available_at, Some(at(60)));
    assert_eq!(job.status, Some(JobStatus::Pending));
}

#[test]
fn capabilities_and_gpu_memory_are_validated() {
    given::<Job>(vec![])
        .when(JobCommand::Submit(SubmitJob {
            requirements: Some(Requirements {
                capabilities: vec!["a,b".into()],
                gpu_memory: None,
            }),
            ..submit_cmd()
        }))
        .then_invalid_field("requirements.capabilities");
    given::<Job>(vec![])
        .when(JobCommand::Submit(SubmitJob {
            requirements: Some(Requirements {
                capabilities: vec!["gpu".into()],
                gpu_memory: Some(-1.0),
            }),
            ..submit_cmd()
        }))
        .then_invalid_field("requirements.gpu_memory");
}
