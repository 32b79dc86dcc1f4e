//! One way to create, read, list, update and delete a named resource: the
//! admin handlers of APIs, usage plans and domain names are each one line
//! over [`Named`]; stages (named within an API), deployments (immutable)
//! and API keys (a secret made at creation) keep their own handlers for
//! what differs, and share the same write path (`AdminApi::put`/`delete`).

use super::{AdminApi, Origin, invalid, not_found, page, required, unexpected};
use crate::state::{Applied, State};
use pylon_common::ValidationErrors;
use pylon_common::model::{ApiDefinition, DomainNameConfig, UsagePlanConfig};
use pylon_proto::admin::v1::{DeleteResponse, Page};
use pylon_proto::config::v1::{self as config, resource::Kind};
use pylon_proto::raft::v1::resource_ref;
use tonic::{Response, Status};

/// A resource kind identified by its name alone.
pub(super) trait Named: Clone + Send + Sync + Sized + 'static {
    /// For messages: "API", "usage plan".
    const NOUN: &'static str;
    /// The request field that carries it, for "required" errors.
    const FIELD: &'static str;
    const REF: resource_ref::Kind;
    /// Checks every field (errors name their paths) and normalises.
    ///
    /// # Errors
    /// Every field at fault.
    fn validate(self) -> Result<Self, ValidationErrors>;
    fn name(&self) -> &str;
    fn into_kind(self) -> Kind;
    fn from_applied(applied: Applied) -> Result<Self, Box<Applied>>;
    fn find<'s>(state: &'s State, name: &str) -> Option<&'s Self>;
    /// Every one, by name.
    fn all(state: &State) -> Box<dyn Iterator<Item = &Self> + '_>;
}

impl Named for config::Api {
    const NOUN: &'static str = "API";
    const FIELD: &'static str = "api";
    const REF: resource_ref::Kind = resource_ref::Kind::Api;

    fn validate(self) -> Result<Self, ValidationErrors> {
        ApiDefinition::validate(self).map(ApiDefinition::into_proto)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn into_kind(self) -> Kind {
        Kind::Api(self)
    }

    fn from_applied(applied: Applied) -> Result<Self, Box<Applied>> {
        match applied {
            Applied::Api(api) => Ok(api),
            other => Err(Box::new(other)),
        }
    }

    fn find<'s>(state: &'s State, name: &str) -> Option<&'s Self> {
        state.api(name)
    }

    fn all(state: &State) -> Box<dyn Iterator<Item = &Self> + '_> {
        Box::new(state.apis_after(""))
    }
}

impl Named for config::UsagePlan {
    const NOUN: &'static str = "usage plan";
    const FIELD: &'static str = "usage_plan";
    const REF: resource_ref::Kind = resource_ref::Kind::UsagePlan;

    fn validate(self) -> Result<Self, ValidationErrors> {
        UsagePlanConfig::validate(self).map(UsagePlanConfig::into_proto)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn into_kind(self) -> Kind {
        Kind::UsagePlan(self)
    }

    fn from_applied(applied: Applied) -> Result<Self, Box<Applied>> {
        match applied {
            Applied::UsagePlan(plan) => Ok(plan),
            other => Err(Box::new(other)),
        }
    }

    fn find<'s>(state: &'s State, name: &str) -> Option<&'s Self> {
        state.usage_plan(name)
    }

    fn all(state: &State) -> Box<dyn Iterator<Item = &Self> + '_> {
        Box::new(state.usage_plans())
    }
}

impl Named for config::DomainName {
    const NOUN: &'static str = "domain name";
    const FIELD: &'static str = "domain_name";
    const REF: resource_ref::Kind = resource_ref::Kind::DomainName;

    fn validate(self) -> Result<Self, ValidationErrors> {
        DomainNameConfig::validate(self).map(DomainNameConfig::into_proto)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn into_kind(self) -> Kind {
        Kind::DomainName(self)
    }

    fn from_applied(applied: Applied) -> Result<Self, Box<Applied>> {
        match applied {
            Applied::DomainName(domain) => Ok(domain),
            other => Err(Box::new(other)),
        }
    }

    fn find<'s>(state: &'s State, name: &str) -> Option<&'s Self> {
        state.domain_name(name)
    }

    fn all(state: &State) -> Box<dyn Iterator<Item = &Self> + '_> {
        Box::new(state.domain_names())
    }
}

impl AdminApi {
    /// Creates (`expected_revision: None`) or replaces a named resource.
    pub(super) async fn put_named<R: Named>(
        &self,
        origin: &Origin,
        resource: Option<R>,
        expected_revision: Option<u64>,
    ) -> Result<Response<R>, Status> {
        let resource = required(resource, R::FIELD)?.validate().map_err(invalid)?;
        let create = expected_revision.is_none();
        let applied = self
            .put(
                origin,
                resource.into_kind(),
                create,
                expected_revision.unwrap_or(0),
            )
            .await?;
        R::from_applied(applied)
            .map(Response::new)
            .map_err(|other| unexpected(*other))
    }

    pub(super) async fn get_named<R: Named>(
        &self,
        consistency: i32,
        name: &str,
    ) -> Result<Response<R>, Status> {
        self.read(consistency, |state| {
            R::find(state, name)
                .cloned()
                .ok_or_else(|| not_found(format!("{} {name}", R::NOUN)))
        })
        .await
    }

    /// One page of the kind, by name, and the next page's token.
    pub(super) async fn list_named<R: Named>(
        &self,
        consistency: i32,
        paging: Option<&Page>,
    ) -> Result<(Vec<R>, String), Status> {
        self.read(consistency, |state| {
            let (items, next) = page(R::all(state), |r| r.name().to_owned(), paging)?;
            Ok((items.into_iter().cloned().collect(), next))
        })
        .await
        .map(Response::into_inner)
    }

    pub(super) async fn delete_named<R: Named>(
        &self,
        origin: &Origin,
        name: &str,
        expected_revision: u64,
    ) -> Result<Response<DeleteResponse>, Status> {
        self.delete(origin, R::REF, "", name, expected_revision).await
    }
}
