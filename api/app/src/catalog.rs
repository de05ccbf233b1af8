//! The optional job-type catalog.
//!
//! Without a catalog, any job type matching `[a-z0-9][a-z0-9._-]{0,63}` is accepted. When
//! `JOBSOURCE_JOB_TYPES_FILE` names a TOML file, only the types listed there are accepted,
//! each with its required inputs and its default worker requirements:
//!
//! ```toml
//! [types.text-to-image]
//! description = "Generate an image from a text prompt"
//! required = ["prompt"]        # "prompt" = the prompt; any other name = parameters.<name>
//! gpu_memory = 8.0             # default requirements.gpu_memory (GB)
//! # capabilities = ["text-to-image"]   (default: the type name)
//! ```
//!
//! [`Catalog::check_submit`] and [`Catalog::check_step`] turn a violation into field-level
//! errors (all of them at once), in the same shape the domain uses for validation, so the
//! API answers them as `422 VALIDATION_FAILED`. Defaults are filled only into a submission
//! that carries no `requirements` of its own. The repository ships
//! `job-types.example.toml` with the seed system's four types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jobsource_domain::job::{Requirements, SubmitJob};
use jobsource_domain::validate::{is_valid_job_type, job_type_message};
use jobsource_domain::workflow::StepSpec;
use jobsource_domain::FieldError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Environment variable naming the catalog file; unset or empty means no catalog.
pub const JOB_TYPES_FILE_ENV: &str = "JOBSOURCE_JOB_TYPES_FILE";

/// The required-input name that means the job's prompt (any other names a parameter).
pub const PROMPT_INPUT: &str = "prompt";

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read job-type catalog {}: {source}", .path.display())]
    Io {
        /// The catalog file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not have the catalog's shape.
    #[error("cannot parse job-type catalog {}: {message}", display_path(.path.as_deref()))]
    Parse {
        /// The catalog file; `None` when parsed from a string.
        path: Option<PathBuf>,
        /// What is wrong, with the line and column when known.
        message: String,
    },
    /// The file parsed but an entry breaks a rule (names the type and field).
    #[error("invalid job-type catalog: {message}")]
    Invalid {
        /// What is wrong, e.g. `types."Foo": job type "Foo" must match ...`.
        message: String,
    },
}

fn display_path(path: Option<&Path>) -> String {
    match path {
        Some(p) => p.display().to_string(),
        None => "<string>".to_owned(),
    }
}

/// One catalog entry: what a job of this type must carry and what it needs by default.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTypeSpec {
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Names of required inputs: `"prompt"` means the prompt (non-empty), any other name
    /// means `parameters.<name>` (present and not null).
    #[serde(default)]
    pub required: Vec<String>,
    /// Default `requirements.capabilities`; `None` means `[<type name>]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
    /// Default `requirements.gpu_memory` in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<f64>,
}

impl JobTypeSpec {
    /// The requirements a job of type `job_type` gets when it names none.
    pub fn default_requirements(&self, job_type: &str) -> Requirements {
        Requirements {
            capabilities: self
                .capabilities
                .clone()
                .unwrap_or_else(|| vec![job_type.to_owned()]),
            gpu_memory: self.gpu_memory,
        }
    }

    /// Field errors (field names prefixed with `prefix`) for each required input that is
    /// missing from `prompt` / `parameters`.
    fn missing_inputs(
        &self,
        job_type: &str,
        prefix: &str,
        prompt: Option<&str>,
        parameters: Option<&Map<String, Value>>,
    ) -> Vec<FieldError> {
        self.required
            .iter()
            .filter_map(|name| {
                let (field, present) = if name == PROMPT_INPUT {
                    let present = prompt.is_some_and(|p| !p.trim().is_empty());
                    (format!("{prefix}prompt"), present)
                } else {
                    let present = parameters
                        .and_then(|m| m.get(name))
                        .is_some_and(|v| !v.is_null());
                    (format!("{prefix}parameters.{name}"), present)
                };
                (!present)
                    .then(|| FieldError::new(field, format!("required for job type '{job_type}'")))
            })
            .collect()
    }

    /// Checks the entry's own rules; `key` is how the entry is named in messages.
    fn validate(&self, key: &str) -> Result<(), CatalogError> {
        let invalid = |message: String| CatalogError::Invalid { message };
        let mut seen = BTreeSet::new();
        for name in &self.required {
            if name.trim().is_empty() {
                return Err(invalid(format!(
                    "{key}.required: input names must not be empty"
                )));
            }
            if !seen.insert(name.as_str()) {
                return Err(invalid(format!(
                    "{key}.required: input {name:?} is listed twice"
                )));
            }
        }
        if let Some(caps) = &self.capabilities {
            if caps.iter().any(|c| c.trim().is_empty()) {
                return Err(invalid(format!(
                    "{key}.capabilities: capabilities must not be empty strings"
                )));
            }
        }
        if let Some(gb) = self.gpu_memory {
            if !gb.is_finite() || gb < 0.0 {
                return Err(invalid(format!(
                    "{key}.gpu_memory: must be a finite number of GB >= 0, got {gb}"
                )));
            }
        }
        Ok(())
    }
}

/// The file's top level: `[types.<name>]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    types: BTreeMap<String, JobTypeSpec>,
}

/// The configured job types, by name. The default (empty) catalog accepts no type; "no
/// catalog configured" is `Option::<Catalog>::None`, see [`Catalog::from_env`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    types: BTreeMap<String, JobTypeSpec>,
}

impl Catalog {
    /// Parses a catalog from TOML text. Every type name must be a valid job type, every
    /// entry well-formed, and at least one type listed.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        Self::parse_from(text, None)
    }

    /// Reads and parses the catalog file at `path`.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_from(&text, Some(path)).map_err(|e| match e {
            CatalogError::Invalid { message } => CatalogError::Invalid {
                message: format!("{}: {message}", path.display()),
            },
            other => other,
        })
    }

    /// Loads the catalog named by `JOBSOURCE_JOB_TYPES_FILE`; `Ok(None)` when the variable
    /// is unset or empty (every valid type name is accepted then).
    pub fn from_env() -> Result<Option<Catalog>, CatalogError> {
        match std::env::var_os(JOB_TYPES_FILE_ENV) {
            Some(path) if !path.is_empty() => Self::load(Path::new(&path)).map(Some),
            _ => Ok(None),
        }
    }

    fn parse_from(text: &str, path: Option<&Path>) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
            path: path.map(Path::to_owned),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if file.types.is_empty() {
            return Err(CatalogError::Invalid {
                message: "no job types listed (add a [types.<name>] table)".to_owned(),
            });
        }
        for (name, spec) in &file.types {
            if !is_valid_job_type(name) {
                return Err(CatalogError::Invalid {
                    message: format!("types.{name:?}: {}", job_type_message(name)),
                });
            }
            spec.validate(&format!("types.{name}"))?;
        }
        Ok(Catalog { types: file.types })
    }

    /// The listed types, sorted by name.
    pub fn types(&self) -> impl Iterator<Item = (&str, &JobTypeSpec)> {
        self.types.iter().map(|(name, spec)| (name.as_str(), spec))
    }

    /// The entry for `name`, if listed.
    pub fn get(&self, name: &str) -> Option<&JobTypeSpec> {
        self.types.get(name)
    }

    /// Number of listed types.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// True when no type is listed.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// Checks a submission: an unknown type gives `type: unknown job type 'x'; known: a, b`,
    /// each missing required input gives `prompt` or `parameters.<name>`: `required for job
    /// type 'x'` (an empty or blank prompt and a null parameter count as missing). All
    /// errors are returned at once. On success, a submission without `requirements` gets
    /// the entry's defaults (capabilities `[type]` unless listed, the entry's `gpu_memory`);
    /// one with `requirements` is left alone.
    pub fn check_submit(&self, submit: &mut SubmitJob) -> Result<(), Vec<FieldError>> {
        let Some(spec) = self.types.get(&submit.job_type) else {
            return Err(vec![self.unknown("type", &submit.job_type)]);
        };
        let errors = spec.missing_inputs(
            &submit.job_type,
            "",
            submit.prompt.as_deref(),
            Some(&submit.parameters),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        if submit.requirements.is_none() {
            submit.requirements = Some(spec.default_requirements(&submit.job_type));
        }
        Ok(())
    }

    /// The checks of [`Catalog::check_submit`] for step `index` of a workflow, field names
    /// prefixed `steps[<index>].` (e.g. `steps[2].prompt`). Nothing is filled in: the
    /// step's job gets its defaults when it is submitted.
    pub fn check_step(&self, index: usize, step: &StepSpec) -> Result<(), Vec<FieldError>> {
        let prefix = format!("steps[{index}].");
        let Some(spec) = self.types.get(&step.job_type) else {
            return Err(vec![self.unknown(&format!("{prefix}type"), &step.job_type)]);
        };
        let errors = spec.missing_inputs(
            &step.job_type,
            &prefix,
            step.prompt.as_deref(),
            step.parameters.as_ref(),
        );
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn unknown(&self, field: &str, job_type: &str) -> FieldError {
        let known = self.types.keys().map(String::as_str).collect::<Vec<_>>();
        FieldError::new(
            field,
            format!(
                "unknown job type '{}'; known: {}",
                shorten(job_type),
                known.join(", ")
            ),
        )
    }
}

/// A client-supplied name, cut to a readable length for an error message.
fn shorten(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    match s.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EXAMPLE: &str = include_str!("../../../job-types.example.toml");

    fn example() -> Catalog {
        Catalog::parse(EXAMPLE).expect("example catalog parses")
    }

    fn submit(job_type: &str, prompt: Option<&str>, parameters: Value) -> SubmitJob {
        SubmitJob {
            job_type: job_type.to_owned(),
            prompt: prompt.map(str::to_owned),
            parameters: match parameters {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            ..SubmitJob::default()
        }
    }

    fn step(job_type: &str, prompt: Option<&str>, parameters: Option<Value>) -> StepSpec {
        StepSpec {
            job_type: job_type.to_owned(),
            prompt: prompt.map(str::to_owned),
            parameters: parameters.and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            }),
            depends_on: Vec::new(),
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn example_file_lists_the_seed_types() {
        let catalog = example();
        let names: Vec<&str> = catalog.types().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["controlnet", "image-to-image", "text-to-image", "upscale"]
        );

        let t2i = catalog.get("text-to-image").expect("text-to-image");
        assert_eq!(t2i.required, ["prompt"]);
        assert_eq!(t2i.gpu_memory, Some(8.0));
        assert_eq!(t2i.capabilities, None);
        assert!(t2i.description.is_some());

        for (name, gb) in [
            ("upscale", 12.0),
            ("controlnet", 16.0),
            ("image-to-image", 4.0),
        ] {
            let spec = catalog.get(name).expect(name);
            assert!(spec.required.is_empty(), "{name}");
            assert_eq!(spec.gpu_memory, Some(gb), "{name}");
            assert_eq!(
                spec.default_requirements(name),
                Requirements {
                    capabilities: vec![name.to_owned()],
                    gpu_memory: Some(gb)
                }
            );
        }
        assert_eq!(catalog.len(), 4);
        assert!(catalog.get("inpaint").is_none());
    }

    #[test]
    fn unknown_type_is_rejected_with_the_known_ones() {
        let catalog = example();
        let mut job = submit("inpaint", Some("x"), json!({}));
        let errors = catalog.check_submit(&mut job).expect_err("unknown type");
        assert_eq!(fields(&errors), ["type"]);
        assert_eq!(
            errors[0].message,
            "unknown job type 'inpaint'; known: controlnet, image-to-image, text-to-image, upscale"
        );
        assert_eq!(job.requirements, None);

        let long = "a".repeat(500);
        let errors = catalog
            .check_submit(&mut submit(&long, None, json!({})))
            .expect_err("unknown type");
        assert!(errors[0].message.len() < 200, "{}", errors[0].message);
    }

    #[test]
    fn missing_prompt_is_rejected() {
        let catalog = example();
        for prompt in [None, Some(""), Some("   ")] {
            let mut job = submit("text-to-image", prompt, json!({"width": 512}));
            let errors = catalog.check_submit(&mut job).expect_err("no prompt");
            assert_eq!(fields(&errors), ["prompt"], "{prompt:?}");
            assert_eq!(errors[0].message, "required for job type 'text-to-image'");
            assert_eq!(job.requirements, None);
        }
        let mut job = submit("text-to-image", Some("a cat"), json!({}));
        assert_eq!(catalog.check_submit(&mut job), Ok(()));
        // Types without required inputs accept an empty submission.
        assert_eq!(
            catalog.check_submit(&mut submit("upscale", None, json!({}))),
            Ok(())
        );
    }

    #[test]
    fn required_parameters_and_all_errors_at_once() {
        let catalog = Catalog::parse(
            r#"
            [types."img.edit"]
            required = ["prompt", "image_url", "mask"]
            capabilities = ["gpu", "inpaint"]
            gpu_memory = 6
            "#,
        )
        .expect("parses");
        let spec = catalog.get("img.edit").expect("listed");
        assert_eq!(spec.gpu_memory, Some(6.0));

        let mut job = submit("img.edit", Some(""), json!({"image_url": null}));
        let errors = catalog.check_submit(&mut job).expect_err("missing");
        assert_eq!(
            fields(&errors),
            ["prompt", "parameters.image_url", "parameters.mask"]
        );
        assert!(errors
            .iter()
            .all(|e| e.message == "required for job type 'img.edit'"));

        let mut job = submit(
            "img.edit",
            Some("remove the hat"),
            json!({"image_url": "https://x/y.png", "mask": ""}),
        );
        assert_eq!(catalog.check_submit(&mut job), Ok(()));
        assert_eq!(
            job.requirements,
            Some(Requirements {
                capabilities: vec!["gpu".to_owned(), "inpaint".to_owned()],
                gpu_memory: Some(6.0)
            })
        );
    }

    #[test]
    fn default_requirements_fill_only_when_absent() {
        let catalog = example();
        let mut job = submit("upscale", None, json!({"scale_factor": 2}));
        assert_eq!(catalog.check_submit(&mut job), Ok(()));
        assert_eq!(
            job.requirements,
            Some(Requirements {
                capabilities: vec!["upscale".to_owned()],
                gpu_memory: Some(12.0)
            })
        );

        let own = Requirements {
            capabilities: vec!["big-gpu".to_owned()],
            gpu_memory: None,
        };
        let mut job = submit("text-to-image", Some("a cat"), json!({}));
        job.requirements = Some(own.clone());
        assert_eq!(catalog.check_submit(&mut job), Ok(()));
        assert_eq!(job.requirements, Some(own));
    }

    #[test]
    fn invalid_catalogs_are_rejected() {
        let invalid = |text: &str, needle: &str| match Catalog::parse(text) {
            Err(CatalogError::Invalid { message }) => {
                assert!(message.contains(needle), "{message:?} lacks {needle:?}")
            }
            other => panic!("expected Invalid for {text:?}, got {other:?}"),
        };
        invalid("[types.Text-To-Image]\nrequired = []", "Text-To-Image");
        invalid("[types.-upscale]\n", "-upscale");
        invalid(&format!("[types.{}]\n", "a".repeat(65)), "must match");
        invalid("", "no job types");
        invalid("[types]\n", "no job types");
        invalid("[types.a]\nrequired = [\"\"]", "types.a.required");
        invalid(
            "[types.a]\nrequired = [\"prompt\", \"prompt\"]",
            "listed twice",
        );
        invalid("[types.a]\ngpu_memory = -1.0", "types.a.gpu_memory");
        invalid("[types.a]\ngpu_memory = nan", "types.a.gpu_memory");
        invalid("[types.a]\ncapabilities = [\" \"]", "types.a.capabilities");

        let parse = |text: &str| match Catalog::parse(text) {
            Err(CatalogError::Parse {
                path: None,
                message,
            }) => message,
            other => panic!("expected Parse for {text:?}, got {other:?}"),
        };
        assert!(parse("[types.a]\ngpu_mem = 8").contains("gpu_mem"));
        assert!(parse("[type.a]\n").contains("type"));
        parse("[types.a]\nrequired = \"prompt\"");
        parse("[types.a\n");
    }

    #[test]
    fn load_reports_the_path() {
        let dir = std::env::temp_dir().join(format!("jobsource-catalog-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.toml");
        match Catalog::load(&missing) {
            Err(e @ CatalogError::Io { .. }) => {
                assert!(e.to_string().contains("missing.toml"), "{e}")
            }
            other => panic!("expected Io, got {other:?}"),
        }
        let good = dir.join("good.toml");
        std::fs::write(&good, EXAMPLE).expect("write");
        assert_eq!(Catalog::load(&good).expect("loads"), example());
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[types.BAD]\n").expect("write");
        match Catalog::load(&bad) {
            Err(CatalogError::Invalid { message }) => {
                assert!(
                    message.contains("bad.toml") && message.contains("BAD"),
                    "{message}"
                )
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        let broken = dir.join("broken.toml");
        std::fs::write(&broken, "[types.a\n").expect("write");
        match Catalog::load(&broken) {
            Err(e @ CatalogError::Parse { path: Some(_), .. }) => {
                assert!(e.to_string().contains("broken.toml"), "{e}")
            }
            other => panic!("expected Parse, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn step_fields_are_prefixed() {
        let catalog = example();
        let errors = catalog
            .check_step(2, &step("text-to-image", Some(""), None))
            .expect_err("no prompt");
        assert_eq!(fields(&errors), ["steps[2].prompt"]);
        assert_eq!(errors[0].message, "required for job type 'text-to-image'");

        let errors = catalog
            .check_step(0, &step("inpaint", None, None))
            .expect_err("unknown");
        assert_eq!(fields(&errors), ["steps[0].type"]);
        assert!(errors[0]
            .message
            .starts_with("unknown job type 'inpaint'; known: "));

        assert_eq!(
            catalog.check_step(1, &step("upscale", None, Some(json!({"scale_factor": 2})))),
            Ok(())
        );
        assert_eq!(
            catalog.check_step(0, &step("text-to-image", Some("a cat"), None)),
            Ok(())
        );

        let catalog = Catalog::parse("[types.edit]\nrequired = [\"image_url\"]\n").expect("parses");
        let errors = catalog
            .check_step(4, &step("edit", None, None))
            .expect_err("no parameters");
        assert_eq!(fields(&errors), ["steps[4].parameters.image_url"]);
        let errors = catalog
            .check_step(4, &step("edit", None, Some(json!({"image_url": null}))))
            .expect_err("null parameter");
        assert_eq!(fields(&errors), ["steps[4].parameters.image_url"]);
    }
}
