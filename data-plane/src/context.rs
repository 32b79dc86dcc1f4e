//! `$context`: what the gateway knows about a request, filled in as the
//! phases run, read by mappings, templates, request authorizers and (later)
//! access logs. Names follow AWS's `$context` variables.

use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub request_id: String,
    /// The API's name.
    pub api_id: String,
    pub stage: String,
    pub deployment_id: String,
    pub domain_name: String,
    pub http_method: String,
    /// The path as the client sent it.
    pub path: String,
    /// The matched route's path template, `/pets/{id}`.
    pub resource_path: String,
    /// `GET /pets/{id}`.
    pub route_key: String,
    pub protocol: String,
    pub request_time_epoch: u64,
    pub identity: Identity,
    pub authorizer: AuthorizerContext,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub source_ip: String,
    pub user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<Arc<ClientCert>>,
    /// A digest of the credential an authorizer accepted (token, identity
    /// sources): tells callers apart when the authorizer names no principal.
    #[serde(skip)]
    pub caller: Option<[u8; 32]>,
}

/// A verified client certificate (mutual TLS).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCert {
    #[serde(rename = "subjectDN")]
    pub subject_dn: String,
    #[serde(rename = "issuerDN")]
    pub issuer_dn: String,
    pub serial_number: String,
    /// SHA-256 of the DER certificate, hex.
    pub fingerprint: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizerContext {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    /// A JWT authorizer's verified claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Map<String, Value>>,
    /// A request authorizer's context map.
    #[serde(flatten)]
    pub context: Map<String, Value>,
}

impl RequestContext {
    /// The value of `$context.NAME`, as text (strings bare, other JSON
    /// values serialised). `None` when unset.
    pub fn lookup(&self, name: &str) -> Option<Cow<'_, str>> {
        let text = |s: &str| (!s.is_empty()).then(|| Cow::Owned(s.to_owned()));
        match name {
            "requestId" => text(&self.request_id),
            "apiId" => text(&self.api_id),
            "stage" => text(&self.stage),
            "deploymentId" => text(&self.deployment_id),
            "domainName" => text(&self.domain_name),
            "httpMethod" => text(&self.http_method),
            "path" => text(&self.path),
            "resourcePath" => text(&self.resource_path),
            "routeKey" => text(&self.route_key),
            "protocol" => text(&self.protocol),
            "requestTimeEpoch" => Some(Cow::Owned(self.request_time_epoch.to_string())),
            "identity.sourceIp" => text(&self.identity.source_ip),
            "identity.userAgent" => text(&self.identity.user_agent),
            "identity.apiKeyId" => self.identity.api_key_id.as_deref().map(Cow::Borrowed),
            "authorizer.principalId" => self.authorizer.principal_id.as_deref().map(Cow::Borrowed),
            _ => {
                if let Some(field) = name.strip_prefix("identity.clientCert.") {
                    let cert = self.identity.client_cert.as_deref()?;
                    return match field {
                        "subjectDN" => text(&cert.subject_dn),
                        "issuerDN" => text(&cert.issuer_dn),
                        "serialNumber" => text(&cert.serial_number),
                        "fingerprint" => text(&cert.fingerprint),
                        _ => None,
                    };
                }
                if let Some(claim) = name.strip_prefix("authorizer.claims.") {
                    return self.authorizer.claims.as_ref()?.get(claim).map(json_text);
                }
                let key = name.strip_prefix("authorizer.")?;
                self.authorizer.context.get(key).map(json_text)
            }
        }
    }

    /// The whole context as a template value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A JSON value as mapping text: strings without quotes, the rest as JSON.
pub fn json_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_names_resolve_like_aws_variables() {
        let mut ctx = RequestContext {
            request_id: "r-1".into(),
            ..Default::default()
        };
        ctx.identity.source_ip = "10.0.0.1".into();
        ctx.authorizer.claims = Some(
            serde_json::json!({"sub": "ann", "groups": ["a"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        ctx.authorizer.context.insert("tier".into(), Value::from("gold"));
        assert_eq!(ctx.lookup("requestId").as_deref(), Some("r-1"));
        assert_eq!(ctx.lookup("identity.sourceIp").as_deref(), Some("10.0.0.1"));
        assert_eq!(ctx.lookup("authorizer.claims.sub").as_deref(), Some("ann"));
        assert_eq!(
            ctx.lookup("authorizer.claims.groups").as_deref(),
            Some(r#"["a"]"#)
        );
        assert_eq!(ctx.lookup("authorizer.tier").as_deref(), Some("gold"));
        assert_eq!(ctx.lookup("authorizer.nothing"), None);
        assert_eq!(ctx.lookup("identity.clientCert.subjectDN"), None);
        assert_eq!(ctx.to_value()["authorizer"]["tier"], "gold");
    }
}
