//! Pylon's data plane: stateless proxy nodes that receive versioned config
//! snapshots from the control plane and serve traffic through the request →
//! integration → response phases.
//!
//! Not built yet: this crate reserves its place in the workspace and shares the
//! validated model from `pylon-common`. The proxy, config sync and `pylon dev`'s
//! in-process data plane arrive with the data-plane milestone.

pub use pylon_common::model::ApiDefinition;
