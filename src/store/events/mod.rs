//! The event log: an ordered, gap-free record of every change subscribers can see, appended by
//! triggers in the writing transaction (see the migration `event_log`), read by position.

pub mod model;
pub mod repo;
pub mod retention;
