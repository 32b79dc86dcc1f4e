//! Validation of API keys, usage plans and custom domain names.

use super::stage::{check_route_throttle, check_throttle};
use super::{Checker, ValidationErrors, at, idx, is_dns_label, is_name};
use pylon_proto::config::v1::{ApiKey, DomainName, UsagePlan, quota};
use std::collections::BTreeSet;

/// An API key's metadata that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKeyConfig {
    key: ApiKey,
}

impl ApiKeyConfig {
    pub fn validate(key: ApiKey) -> Result<ApiKeyConfig, ValidationErrors> {
        let mut c = Checker::default();
        c.check(
            !key.name.is_empty() && key.name.len() <= 128,
            "name",
            "must be 1-128 characters",
        );
        c.check(
            key.description.len() <= 1024,
            "description",
            "must be at most 1024 characters",
        );
        c.finish(ApiKeyConfig { key })
    }

    pub fn into_proto(self) -> ApiKey {
        self.key
    }
}

/// A caller-chosen API key value: 20-128 printable ASCII characters, as AWS requires.
pub fn validate_api_key_value(value: &str) -> Result<(), ValidationErrors> {
    let mut c = Checker::default();
    c.check(
        (20..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic()),
        "value",
        "must be 20-128 printable ASCII characters",
    );
    c.finish(())
}

/// A usage plan that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct UsagePlanConfig {
    plan: UsagePlan,
}

impl UsagePlanConfig {
    pub fn validate(plan: UsagePlan) -> Result<UsagePlanConfig, ValidationErrors> {
        let mut c = Checker::default();
        c.check(
            is_name(&plan.name, 128, b"_-."),
            "name",
            "must be 1-128 chars of A-Z a-z 0-9 _ - .",
        );
        c.check(
            plan.description.len() <= 1024,
            "description",
            "must be at most 1024 characters",
        );
        if let Some(throttle) = &plan.throttle {
            check_throttle(&mut c, "throttle", throttle);
        }
        if let Some(q) = &plan.quota {
            c.check(q.limit > 0, "quota.limit", "must be at least 1");
            match quota::Period::try_from(q.period) {
                Ok(quota::Period::Day) => c.check(q.offset == 0, "quota.offset", "must be 0 for DAY"),
                Ok(quota::Period::Week) => c.check(q.offset <= 6, "quota.offset", "must be 0..=6 for WEEK"),
                Ok(quota::Period::Month) => {
                    c.check(q.offset <= 27, "quota.offset", "must be 0..=27 for MONTH")
                }
                Ok(quota::Period::Unspecified) | Err(_) => {
                    c.fail("quota.period", "must be DAY, WEEK or MONTH")
                }
            }
        }
        let mut stages = BTreeSet::new();
        for (i, api_stage) in plan.api_stages.iter().enumerate() {
            let p = idx("api_stages", i);
            c.check(is_dns_label(&api_stage.api), at(&p, "api"), "must name an API");
            c.check(
                is_name(&api_stage.stage, 128, b"_-"),
                at(&p, "stage"),
                "must name a stage",
            );
            if !stages.insert((api_stage.api.as_str(), api_stage.stage.as_str())) {
                c.fail(&p, "appears twice");
            }
            check_route_throttle(&mut c, &at(&p, "route_throttle"), &api_stage.route_throttle);
        }
        let mut keys = BTreeSet::new();
        for (i, id) in plan.api_key_ids.iter().enumerate() {
            c.check(!id.is_empty(), idx("api_key_ids", i), "must not be empty");
            if !keys.insert(id.as_str()) {
                c.fail(idx("api_key_ids", i), "appears twice");
            }
        }
        c.finish(UsagePlanConfig { plan })
    }

    pub fn into_proto(self) -> UsagePlan {
        self.plan
    }
}

/// A custom domain name that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainNameConfig {
    domain: DomainName,
}

impl DomainNameConfig {
    pub fn validate(domain: DomainName) -> Result<DomainNameConfig, ValidationErrors> {
        let mut c = Checker::default();
        let labels_ok =
            domain.name.len() <= 253 && domain.name.contains('.') && domain.name.split('.').all(is_dns_label);
        c.check(
            labels_ok,
            "name",
            "must be a lower-case fully qualified domain name",
        );
        let mut paths = BTreeSet::new();
        for (i, mapping) in domain.mappings.iter().enumerate() {
            let p = idx("mappings", i);
            let base = if mapping.base_path == "(none)" {
                ""
            } else {
                mapping.base_path.as_str()
            };
            let ok = base.is_empty() || base.split('/').all(|segment| is_name(segment, 128, b"-._~"));
            c.check(
                ok,
                at(&p, "base_path"),
                "must be empty, \"(none)\", or path segments of A-Z a-z 0-9 - . _ ~",
            );
            if !paths.insert(base) {
                c.fail(at(&p, "base_path"), "appears twice");
            }
            c.check(is_dns_label(&mapping.api), at(&p, "api"), "must name an API");
            c.check(
                is_name(&mapping.stage, 128, b"_-"),
                at(&p, "stage"),
                "must name a stage",
            );
        }
        c.check(
            domain.certificate_file.is_empty() == domain.private_key_file.is_empty(),
            "private_key_file",
            "certificate_file and private_key_file go together",
        );
        c.check(
            domain.truststore_file.is_empty() || !domain.certificate_file.is_empty(),
            "truststore_file",
            "mutual TLS needs the domain's certificate_file too",
        );
        c.finish(DomainNameConfig { domain })
    }

    pub fn into_proto(self) -> DomainName {
        self.domain
    }
}
