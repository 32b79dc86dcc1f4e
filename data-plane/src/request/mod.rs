//! The request phase: admit the request (limits, well-formedness), find the
//! API stage it addresses, pick the canary or main deployment, match a route.
//! (Authentication, validation and transformation join here in later
//! milestones, in that order.)

pub mod address;
pub mod admit;
pub mod canary;
