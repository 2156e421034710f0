//! The event model of ingest format v1 (`shared/spec/events.md`), normalised.
//!
//! Every alias and the `run.checkpoint` shorthand are resolved once, at ingest, so the stored
//! form is typed and read in place by projections. JSON values that the ledger does not
//! interpret (inputs, outputs, record data, unknown fields) are kept as JSON text, verbatim.

use rkyv::{Archive, Deserialize, Serialize};

/// JSON text, kept exactly as received (a valid JSON value).
pub type JsonText = String;

/// The context fields of a run, as `run.started` (or a checkpoint) gives them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RunFields {
    pub operation: Option<String>,
    pub doctype: Option<String>,
    pub template: Option<String>,
    pub flow: Option<String>,
    pub owner: Option<String>,
    pub agent: Option<String>,
    pub role: Option<String>,
    pub parent_run_id: Option<String>,
    pub chain_id: Option<String>,
    pub step_id: Option<String>,
    pub step_index: Option<i64>,
    pub input: Option<JsonText>,
    pub options: Option<JsonText>,
    /// Every other key of the `run` object, as a JSON object text.
    pub extra: Option<JsonText>,
}

/// The error of a failed run.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ErrorInfo {
    pub message: String,
    pub code: Option<JsonText>,
    pub stack: Option<String>,
    /// Other keys of the error object, as a JSON object text.
    pub extra: Option<JsonText>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocChange {
    Created,
    Updated,
    Deleted,
}

impl DocChange {
    pub fn as_str(self) -> &'static str {
        match self {
            DocChange::Created => "created",
            DocChange::Updated => "updated",
            DocChange::Deleted => "deleted",
        }
    }
}

impl ArchivedDocChange {
    pub fn get(&self) -> DocChange {
        match self {
            ArchivedDocChange::Created => DocChange::Created,
            ArchivedDocChange::Updated => DocChange::Updated,
            ArchivedDocChange::Deleted => DocChange::Deleted,
        }
    }
}

/// The `status` a `run.checkpoint` carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl CheckpointStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointStatus::Pending => "pending",
            CheckpointStatus::Running => "running",
            CheckpointStatus::Completed => "completed",
            CheckpointStatus::Failed => "failed",
            CheckpointStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => CheckpointStatus::Pending,
            "running" => CheckpointStatus::Running,
            "completed" => CheckpointStatus::Completed,
            "failed" => CheckpointStatus::Failed,
            "cancelled" => CheckpointStatus::Cancelled,
            _ => return None,
        })
    }
}

impl ArchivedCheckpointStatus {
    pub fn get(&self) -> CheckpointStatus {
        match self {
            ArchivedCheckpointStatus::Pending => CheckpointStatus::Pending,
            ArchivedCheckpointStatus::Running => CheckpointStatus::Running,
            ArchivedCheckpointStatus::Completed => CheckpointStatus::Completed,
            ArchivedCheckpointStatus::Failed => CheckpointStatus::Failed,
            ArchivedCheckpointStatus::Cancelled => CheckpointStatus::Cancelled,
        }
    }
}

/// What an event says, by type. Large parts are boxed: an archived enum is as large as its
/// largest variant, and every stored event would pay for a checkpoint's inline context.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Body {
    Started {
        run: Box<RunFields>,
    },
    Progress {
        path: String,
        value: JsonText,
        append: bool,
    },
    Waiting {
        step_id: String,
        prompt: Option<String>,
    },
    Resumed {
        step_id: String,
        data: Option<JsonText>,
    },
    Completed {
        output: JsonText,
        duration_ms: Option<i64>,
    },
    Failed {
        error: Box<ErrorInfo>,
        duration_ms: Option<i64>,
    },
    Cancelled {
        reason: Option<String>,
    },
    Doc {
        change: DocChange,
        doctype: String,
        name: String,
        data: Option<JsonText>,
        before: Option<JsonText>,
    },
    Checkpoint {
        run: Box<RunFields>,
        status: CheckpointStatus,
        output: Option<JsonText>,
        error: Option<Box<ErrorInfo>>,
        duration_ms: Option<i64>,
    },
}

/// One event as a client sent it, normalised.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Event {
    /// Client time, ms since the Unix epoch.
    pub ts_ms: i64,
    pub run_id: String,
    /// Client event id, the deduplication key.
    pub id: Option<String>,
    pub body: Body,
    /// Unknown top-level fields, as a JSON object text.
    pub extra: Option<JsonText>,
}

/// An event as the log stores it: the client's event plus what the ledger adds.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: u64,
    /// Server time of ingest, ms since the Unix epoch.
    pub ingested_ms: i64,
    pub event: Event,
}

/// The `type` names of ingest format v1.
pub const TYPES: [&str; 11] = [
    "run.started",
    "run.progress",
    "run.waiting",
    "run.resumed",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "doc.created",
    "doc.updated",
    "doc.deleted",
    "run.checkpoint",
];

impl Body {
    /// The event's `type` as ingest format v1 names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::Started { .. } => "run.started",
            Body::Progress { .. } => "run.progress",
            Body::Waiting { .. } => "run.waiting",
            Body::Resumed { .. } => "run.resumed",
            Body::Completed { .. } => "run.completed",
            Body::Failed { .. } => "run.failed",
            Body::Cancelled { .. } => "run.cancelled",
            Body::Doc { change, .. } => match change {
                DocChange::Created => "doc.created",
                DocChange::Updated => "doc.updated",
                DocChange::Deleted => "doc.deleted",
            },
            Body::Checkpoint { .. } => "run.checkpoint",
        }
    }
}

impl ArchivedBody {
    /// The event's `type` as ingest format v1 names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            ArchivedBody::Started { .. } => "run.started",
            ArchivedBody::Progress { .. } => "run.progress",
            ArchivedBody::Waiting { .. } => "run.waiting",
            ArchivedBody::Resumed { .. } => "run.resumed",
            ArchivedBody::Completed { .. } => "run.completed",
            ArchivedBody::Failed { .. } => "run.failed",
            ArchivedBody::Cancelled { .. } => "run.cancelled",
            ArchivedBody::Doc { change, .. } => match change.get() {
                DocChange::Created => "doc.created",
                DocChange::Updated => "doc.updated",
                DocChange::Deleted => "doc.deleted",
            },
            ArchivedBody::Checkpoint { .. } => "run.checkpoint",
        }
    }
}
