//! Projections: state rebuilt from the log — runs, trees, record provenance, CoworkerState —
//! answerable as of any seq.
//!
//! Each projection records the last seq it applied (`proj_meta.applied`) in the same
//! transaction as its changes, so after a crash it catches up from there; `rebuild` applies the
//! whole log again, through the same code, into a new file that then replaces them.

mod out;
mod plan;
mod projector;
pub mod run;
pub mod tables;
mod view;

pub use out::{to_value, NodeSummary, RunOut, ShowAnswer, StateAnswer, TreeAnswer, TreeNode};
pub use projector::{applied, catch_up, catch_up_in_steps, rebuild, rebuild_in_spans, SPAN_EVENTS};
pub use run::{RunState, Status};
pub use tables::CHECKPOINT_EVERY;
pub use view::{DocChangeRow, RunFilter, View, TREE_DEPTH};
