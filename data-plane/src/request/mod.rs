//! The request phase, in the order it runs: admit the request (limits,
//! well-formedness), find the API stage it addresses ([`address`]), pick the
//! canary or main deployment ([`canary`]), judge the caller's address
//! ([`policy`]), (CORS preflights are answered here, see
//! [`crate::pipeline`]), match a route, authenticate and authorize
//! ([`authorize`]), throttle ([`throttle`]), validate ([`validate`]), look
//! in the response cache ([`crate::cache`]) and transform ([`transform`]).
//! [`inputs`] is what mappings, templates and authorizers read.

pub mod address;
pub mod admit;
pub mod authorize;
pub mod body;
pub mod canary;
pub mod inputs;
pub mod policy;
pub mod throttle;
pub mod transform;
pub mod validate;
