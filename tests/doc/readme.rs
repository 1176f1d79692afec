//! The root package's library exists for one reason: its doctests are the
//! README's Rust code blocks, so that code compiles and runs as written
//! (from the repository root, as a user would run it).

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
