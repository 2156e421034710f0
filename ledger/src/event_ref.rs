//! Borrowed twins of the event model: what parsing builds from a line, each string borrowed
//! from the line's text unless it had escapes.
//!
//! Each twin archives as the owned type's archive (`as = Archived…`): the compiler checks that
//! every field resolves to the owned field's archived type, and serialising visits fields in
//! the same order, so the bytes are the same as archiving the owned [`Event`] — without
//! copying every string into its own allocation first (a test compares the bytes for every
//! kind of event). Variants must stay in the owned enum's order: the tag is the position.

use std::borrow::Cow;

use rkyv::with::{AsOwned, Map};
use rkyv::{Archive, Serialize};

use crate::event::{
    ArchivedBody, ArchivedErrorInfo, ArchivedEvent, ArchivedRunFields, ArchivedStoredEvent, Body,
    CheckpointStatus, DocChange, ErrorInfo, Event, RunFields,
};

/// A string of the event: borrowed from the line, owned where it had escapes.
pub type Text<'a> = Cow<'a, str>;

/// [`RunFields`], borrowed.
#[derive(Archive, Serialize, Debug, Clone, PartialEq, Default)]
#[rkyv(as = ArchivedRunFields)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub struct RunFieldsRef<'a> {
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub operation: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub doctype: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub template: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub flow: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub owner: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub agent: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub role: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub parent_run_id: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub chain_id: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub step_id: Option<Text<'a>>,
    pub step_index: Option<i64>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub input: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub options: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub extra: Option<Text<'a>>,
}

/// [`ErrorInfo`], borrowed.
#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
#[rkyv(as = ArchivedErrorInfo)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub struct ErrorInfoRef<'a> {
    #[rkyv(with = AsOwned, omit_bounds)]
    pub message: Text<'a>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub code: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub stack: Option<Text<'a>>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub extra: Option<Text<'a>>,
}

/// [`Body`], borrowed; variants in [`Body`]'s order.
#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
#[rkyv(as = ArchivedBody)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub enum BodyRef<'a> {
    Started {
        #[rkyv(omit_bounds)]
        run: Box<RunFieldsRef<'a>>,
    },
    Progress {
        #[rkyv(with = AsOwned, omit_bounds)]
        path: Text<'a>,
        #[rkyv(with = AsOwned, omit_bounds)]
        value: Text<'a>,
        append: bool,
    },
    Waiting {
        #[rkyv(with = AsOwned, omit_bounds)]
        step_id: Text<'a>,
        #[rkyv(with = Map<AsOwned>, omit_bounds)]
        prompt: Option<Text<'a>>,
    },
    Resumed {
        #[rkyv(with = AsOwned, omit_bounds)]
        step_id: Text<'a>,
        #[rkyv(with = Map<AsOwned>, omit_bounds)]
        data: Option<Text<'a>>,
    },
    Completed {
        #[rkyv(with = AsOwned, omit_bounds)]
        output: Text<'a>,
        duration_ms: Option<i64>,
    },
    Failed {
        #[rkyv(omit_bounds)]
        error: Box<ErrorInfoRef<'a>>,
        duration_ms: Option<i64>,
    },
    Cancelled {
        #[rkyv(with = Map<AsOwned>, omit_bounds)]
        reason: Option<Text<'a>>,
    },
    Doc {
        change: DocChange,
        #[rkyv(with = AsOwned, omit_bounds)]
        doctype: Text<'a>,
        #[rkyv(with = AsOwned, omit_bounds)]
        name: Text<'a>,
        #[rkyv(with = Map<AsOwned>, omit_bounds)]
        data: Option<Text<'a>>,
        #[rkyv(with = Map<AsOwned>, omit_bounds)]
        before: Option<Text<'a>>,
    },
    Checkpoint {
        #[rkyv(omit_bounds)]
        run: Box<RunFieldsRef<'a>>,
        status: CheckpointStatus,
        #[rkyv(with = Map<AsOwned>, omit_bounds)]
        output: Option<Text<'a>>,
        #[rkyv(omit_bounds)]
        error: Option<Box<ErrorInfoRef<'a>>>,
        duration_ms: Option<i64>,
    },
}

/// [`Event`], borrowed.
#[derive(Archive, Serialize, Debug, Clone, PartialEq)]
#[rkyv(as = ArchivedEvent)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub struct EventRef<'a> {
    pub ts_ms: i64,
    #[rkyv(with = AsOwned, omit_bounds)]
    pub run_id: Text<'a>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub id: Option<Text<'a>>,
    #[rkyv(omit_bounds)]
    pub body: BodyRef<'a>,
    #[rkyv(with = Map<AsOwned>, omit_bounds)]
    pub extra: Option<Text<'a>>,
}

/// [`crate::event::StoredEvent`], borrowed.
#[derive(Archive, Serialize, Debug)]
#[rkyv(as = ArchivedStoredEvent)]
#[rkyv(serialize_bounds(__S: rkyv::ser::Writer + rkyv::ser::Allocator, <__S as rkyv::rancor::Fallible>::Error: rkyv::rancor::Source))]
pub struct StoredEventRef<'e, 'a> {
    pub seq: u64,
    pub ingested_ms: i64,
    #[rkyv(with = rkyv::with::Inline, omit_bounds)]
    pub event: &'e EventRef<'a>,
}

pub(crate) fn owned(t: Option<Text>) -> Option<String> {
    t.map(Cow::into_owned)
}

pub(crate) fn owned_text(s: Option<String>) -> Option<Text<'static>> {
    s.map(Cow::Owned)
}

fn borrowed(s: &Option<String>) -> Option<Text<'_>> {
    s.as_deref().map(Cow::Borrowed)
}

impl RunFieldsRef<'_> {
    pub fn into_owned(self) -> RunFields {
        RunFields {
            operation: owned(self.operation),
            doctype: owned(self.doctype),
            template: owned(self.template),
            flow: owned(self.flow),
            owner: owned(self.owner),
            agent: owned(self.agent),
            role: owned(self.role),
            parent_run_id: owned(self.parent_run_id),
            chain_id: owned(self.chain_id),
            step_id: owned(self.step_id),
            step_index: self.step_index,
            input: owned(self.input),
            options: owned(self.options),
            extra: owned(self.extra),
        }
    }
}

impl RunFields {
    /// The same fields, each string moved into a `Cow::Owned`.
    pub fn into_ref(self) -> RunFieldsRef<'static> {
        let t = owned_text;
        RunFieldsRef {
            operation: t(self.operation),
            doctype: t(self.doctype),
            template: t(self.template),
            flow: t(self.flow),
            owner: t(self.owner),
            agent: t(self.agent),
            role: t(self.role),
            parent_run_id: t(self.parent_run_id),
            chain_id: t(self.chain_id),
            step_id: t(self.step_id),
            step_index: self.step_index,
            input: t(self.input),
            options: t(self.options),
            extra: t(self.extra),
        }
    }

    pub fn borrowed(&self) -> RunFieldsRef<'_> {
        RunFieldsRef {
            operation: borrowed(&self.operation),
            doctype: borrowed(&self.doctype),
            template: borrowed(&self.template),
            flow: borrowed(&self.flow),
            owner: borrowed(&self.owner),
            agent: borrowed(&self.agent),
            role: borrowed(&self.role),
            parent_run_id: borrowed(&self.parent_run_id),
            chain_id: borrowed(&self.chain_id),
            step_id: borrowed(&self.step_id),
            step_index: self.step_index,
            input: borrowed(&self.input),
            options: borrowed(&self.options),
            extra: borrowed(&self.extra),
        }
    }
}

impl ErrorInfoRef<'_> {
    pub fn into_owned(self) -> ErrorInfo {
        ErrorInfo {
            message: self.message.into_owned(),
            code: owned(self.code),
            stack: owned(self.stack),
            extra: owned(self.extra),
        }
    }
}

impl ErrorInfo {
    pub fn borrowed(&self) -> ErrorInfoRef<'_> {
        ErrorInfoRef {
            message: Cow::Borrowed(&self.message),
            code: borrowed(&self.code),
            stack: borrowed(&self.stack),
            extra: borrowed(&self.extra),
        }
    }
}

impl BodyRef<'_> {
    pub fn into_owned(self) -> Body {
        match self {
            BodyRef::Started { run } => Body::Started {
                run: Box::new(run.into_owned()),
            },
            BodyRef::Progress {
                path,
                value,
                append,
            } => Body::Progress {
                path: path.into_owned(),
                value: value.into_owned(),
                append,
            },
            BodyRef::Waiting { step_id, prompt } => Body::Waiting {
                step_id: step_id.into_owned(),
                prompt: owned(prompt),
            },
            BodyRef::Resumed { step_id, data } => Body::Resumed {
                step_id: step_id.into_owned(),
                data: owned(data),
            },
            BodyRef::Completed {
                output,
                duration_ms,
            } => Body::Completed {
                output: output.into_owned(),
                duration_ms,
            },
            BodyRef::Failed { error, duration_ms } => Body::Failed {
                error: Box::new(error.into_owned()),
                duration_ms,
            },
            BodyRef::Cancelled { reason } => Body::Cancelled {
                reason: owned(reason),
            },
            BodyRef::Doc {
                change,
                doctype,
                name,
                data,
                before,
            } => Body::Doc {
                change,
                doctype: doctype.into_owned(),
                name: name.into_owned(),
                data: owned(data),
                before: owned(before),
            },
            BodyRef::Checkpoint {
                run,
                status,
                output,
                error,
                duration_ms,
            } => Body::Checkpoint {
                run: Box::new(run.into_owned()),
                status,
                output: owned(output),
                error: error.map(|e| Box::new(e.into_owned())),
                duration_ms,
            },
        }
    }
}

impl Body {
    pub fn borrowed(&self) -> BodyRef<'_> {
        match self {
            Body::Started { run } => BodyRef::Started {
                run: Box::new(run.borrowed()),
            },
            Body::Progress {
                path,
                value,
                append,
            } => BodyRef::Progress {
                path: Cow::Borrowed(path),
                value: Cow::Borrowed(value),
                append: *append,
            },
            Body::Waiting { step_id, prompt } => BodyRef::Waiting {
                step_id: Cow::Borrowed(step_id),
                prompt: borrowed(prompt),
            },
            Body::Resumed { step_id, data } => BodyRef::Resumed {
                step_id: Cow::Borrowed(step_id),
                data: borrowed(data),
            },
            Body::Completed {
                output,
                duration_ms,
            } => BodyRef::Completed {
                output: Cow::Borrowed(output),
                duration_ms: *duration_ms,
            },
            Body::Failed { error, duration_ms } => BodyRef::Failed {
                error: Box::new(error.borrowed()),
                duration_ms: *duration_ms,
            },
            Body::Cancelled { reason } => BodyRef::Cancelled {
                reason: borrowed(reason),
            },
            Body::Doc {
                change,
                doctype,
                name,
                data,
                before,
            } => BodyRef::Doc {
                change: *change,
                doctype: Cow::Borrowed(doctype),
                name: Cow::Borrowed(name),
                data: borrowed(data),
                before: borrowed(before),
            },
            Body::Checkpoint {
                run,
                status,
                output,
                error,
                duration_ms,
            } => BodyRef::Checkpoint {
                run: Box::new(run.borrowed()),
                status: *status,
                output: borrowed(output),
                error: error.as_ref().map(|e| Box::new(e.borrowed())),
                duration_ms: *duration_ms,
            },
        }
    }
}

impl EventRef<'_> {
    pub fn into_owned(self) -> Event {
        Event {
            ts_ms: self.ts_ms,
            run_id: self.run_id.into_owned(),
            id: owned(self.id),
            body: self.body.into_owned(),
            extra: owned(self.extra),
        }
    }
}

impl Event {
    /// The event as a borrowed twin (what [`crate::encode::EncodedBatch::push`] archives).
    pub fn borrowed(&self) -> EventRef<'_> {
        EventRef {
            ts_ms: self.ts_ms,
            run_id: Cow::Borrowed(&self.run_id),
            id: borrowed(&self.id),
            body: self.body.borrowed(),
            extra: borrowed(&self.extra),
        }
    }
}
