//! Deciding a submission: validation of every field of a new job, all errors at once.

use super::*;

/// Validates a submission and resolves its defaults.
pub(super) fn decide_submit(s: &SubmitJob) -> Result<Vec<JobEvent>, DomainError> {
    let mut errors = Vec::new();
    if s.job_id.is_nil() {
        errors.push(FieldError::new("job_id", "job_id is required"));
    }
    if !validate::is_valid_job_type(&s.job_type) {
        errors.push(FieldError::new(
            "type",
            validate::job_type_message(&s.job_type),
        ));
    }
    if s.priority > 100 {
        errors.push(FieldError::new("priority", "priority must be 0..=100"));
    }
    if s.max_retries > MAX_RETRIES_LIMIT {
        errors.push(FieldError::new(
            "max_retries",
            format!("max_retries must be at most {MAX_RETRIES_LIMIT}"),
        ));
    }
    if s.depends_on.contains(&s.job_id) {
        errors.push(FieldError::new(
            "depends_on",
            "a job cannot depend on itself",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = s.depends_on.iter().find(|d| !seen.insert(**d)) {
        errors.push(FieldError::new(
            "depends_on",
            format!("job {dup} is listed twice"),
        ));
    }
    if let Some(url) = &s.webhook_url {
        if !validate::is_http_url(url) {
            errors.push(FieldError::new(
                "webhook_url",
                "webhook_url must be an http:// or https:// URL",
            ));
        }
    }
    if let Some(req) = &s.requirements {
        if req.capabilities.len() > validate::MAX_CAPABILITIES {
            errors.push(FieldError::new(
                "requirements.capabilities",
                format!("at most {} capabilities", validate::MAX_CAPABILITIES),
            ));
        }
        if let Some(bad) = req
            .capabilities
            .iter()
            .find(|c| !validate::is_valid_capability(c))
        {
            errors.push(FieldError::new(
                "requirements.capabilities",
                format!(
                    "{bad:?} is not a capability name ({})",
                    validate::CAPABILITY_PATTERN
                ),
            ));
        }
        if let Some(g) = req.gpu_memory {
            if !validate::is_valid_gpu_memory(g) {
                errors.push(FieldError::new(
                    "requirements.gpu_memory",
                    validate::GPU_MEMORY_RULE,
                ));
            }
        }
    }
    if s.step_index.is_some() && s.workflow_id.is_none() {
        errors.push(FieldError::new(
            "step_index",
            "step_index is only allowed with workflow_id",
        ));
    }
    if !errors.is_empty() {
        return Err(DomainError::Validation(errors));
    }
    let requirements = s.requirements.clone().unwrap_or_else(|| Requirements {
        capabilities: vec![s.job_type.clone()],
        gpu_memory: None,
    });
    Ok(vec![JobEvent::JobSubmitted(JobSubmitted {
        job_id: s.job_id,
        job_type: s.job_type.clone(),
        prompt: s.prompt.clone(),
        parameters: s.parameters.clone(),
        priority: s.priority,
        requirements,
        webhook_url: s.webhook_url.clone(),
        workflow_id: s.workflow_id,
        step_index: s.step_index,
        depends_on: s.depends_on.clone(),
        max_retries: s.max_retries,
        status: if s.depends_on.is_empty() {
            JobStatus::Pending
        } else {
            JobStatus::Waiting
        },
        available_at: s.available_at,
    })])
}
