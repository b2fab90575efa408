//! End-to-end tests of the emulator's HTTP surface, driven in-process (no network).
//!
//! Every metric assertion compares what the APIs return with the ground truth computed
//! independently by `/_emulator/truth`, so paging, batching, splitting or restatement bugs show
//! up as mismatched totals.

mod common;

mod clock;
mod faults;
mod ga4;
mod google;
mod meta;
