//! What mappings, templates and request authorizers read from a request:
//! headers, query string, path and its parameters, the body (parsed as JSON
//! at most once), stage variables — and how a mapping value is evaluated.

use crate::context::{RequestContext, json_text};
use crate::integration::http::Forwarding;
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use pylon_common::model::mapping::{Part, Source};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub struct Inputs<'a> {
    pub parts: &'a Parts,
    /// The path below the stage.
    pub path: &'a str,
    pub params: &'a [(&'a str, String)],
    pub variables: &'a BTreeMap<String, String>,
    /// The whole body, when the route reads it.
    pub body: Option<&'a Bytes>,
    /// The forwarding headers a backend is told, in place of the client's.
    forwarding: Option<&'a Forwarding>,
    body_json: OnceLock<Option<Value>>,
    query: OnceLock<Vec<(String, String)>>,
}

/// What response mappings and templates read from the integration's response.
pub struct ResponseInputs<'a> {
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a Bytes>,
    pub body_json: Option<&'a Value>,
}

impl<'a> Inputs<'a> {
    pub fn new(
        parts: &'a Parts,
        path: &'a str,
        params: &'a [(&'a str, String)],
        variables: &'a BTreeMap<String, String>,
        body: Option<&'a Bytes>,
    ) -> Inputs<'a> {
        Inputs {
            parts,
            path,
            params,
            variables,
            body,
            forwarding: None,
            body_json: OnceLock::new(),
            query: OnceLock::new(),
        }
    }

    /// Headers as a backend is told them: `X-Forwarded-*` are the
    /// gateway's (what mappings, templates and authorizers read).
    pub fn forwarded(mut self, forwarding: &'a Forwarding) -> Inputs<'a> {
        self.forwarding = Some(forwarding);
        self
    }

    /// Every value of `name`, comma-joined (as AWS passes repeated headers).
    /// A line that is not ASCII text is kept, its bytes read as UTF-8 with
    /// U+FFFD for what is not: a reader sees every line the backend gets.
    pub fn header(&self, name: &str) -> Option<String> {
        if let Some(told) = self.told(name) {
            return told.and_then(|v| v.to_str().ok()).map(str::to_owned);
        }
        let mut lines = self.parts.headers.get_all(name).iter();
        let mut joined = String::from_utf8_lossy(lines.next()?.as_bytes()).into_owned();
        for line in lines {
            joined.push(',');
            joined.push_str(&String::from_utf8_lossy(line.as_bytes()));
        }
        Some(joined)
    }

    /// `name` as a credential: its lines comma-joined, or `None` when it is
    /// absent or any line is not visible ASCII text (RFC 9110 §5.5 `field-vchar`
    /// without `obs-text`) or has spaces around it (RFC 9113 §8.2.1) — a
    /// credential the authorizer would see altered while the backend gets
    /// the original is no credential. With `single`, also `None` for more
    /// than one line.
    pub fn credential(&self, name: &str, single: bool) -> Option<String> {
        if let Some(told) = self.told(name) {
            return told.and_then(|v| v.to_str().ok()).map(str::to_owned);
        }
        let lines = self.parts.headers.get_all(name);
        if single && lines.iter().nth(1).is_some() {
            return None;
        }
        // (HTTP/2 lets a value keep the spaces around it, which an HTTP/1.1
        // backend then strips: such a value is read two ways.)
        let text: Option<Vec<&str>> = lines
            .iter()
            .map(|v| {
                v.to_str()
                    .ok()
                    .filter(|t| t.trim_matches([' ', '\t']).len() == t.len())
            })
            .collect();
        text.filter(|lines| !lines.is_empty())
            .map(|lines| lines.join(","))
    }

    pub fn query_pairs(&self) -> &[(String, String)] {
        self.query.get_or_init(|| {
            form_urlencoded::parse(self.parts.uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect()
        })
    }

    /// Every value of `name`, comma-joined.
    pub fn query(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .query_pairs()
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; `None` when there is none or it is not JSON.
    pub fn body_json(&self) -> Option<&Value> {
        self.body_json
            .get_or_init(|| self.body.and_then(|b| serde_json::from_slice(b).ok()))
            .as_ref()
    }

    /// What the gateway tells a backend for `name` when it is a forwarding
    /// header (`Some(None)`: nothing).
    fn told(&self, name: &str) -> Option<Option<&HeaderValue>> {
        let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
        self.forwarding?.told(&name)
    }

    /// The headers as events show them (a request authorizer's, `$connect`'s):
    /// each name with its values joined by commas, and with the list of its
    /// values — without hop-by-hop headers, with the gateway's forwarding
    /// headers.
    pub fn headers_json(&self) -> (Value, Value) {
        let mut headers = self.parts.headers.clone();
        crate::headers::strip_hop_by_hop(&mut headers);
        if let Some(forwarding) = self.forwarding {
            forwarding.apply(&mut headers);
        }
        let (mut single, mut multi) = (Map::new(), Map::new());
        for name in headers.keys() {
            // Every line, as `header` reads it: the authorizer sees what the
            // backend gets.
            let values: Vec<String> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            single.insert(name.as_str().to_owned(), values.join(",").into());
            multi.insert(name.as_str().to_owned(), values.into());
        }
        (single.into(), multi.into())
    }

    pub fn query_json(&self) -> Value {
        let mut out = Map::new();
        for (name, _) in self.query_pairs() {
            if !out.contains_key(name)
                && let Some(value) = self.query(name)
            {
                out.insert(name.clone(), Value::String(value));
            }
        }
        Value::Object(out)
    }

    /// What a Velocity template's `$input`, `$context` and `$stageVariables`
    /// read: `body` is the request's body in a request template, the
    /// integration's answer in a response template; `$input.params()` is
    /// always the client's request (path parameters, query string, headers
    /// as the backend is told them).
    pub fn velocity(
        &self,
        body: Option<&[u8]>,
        ctx: &crate::context::RequestContext,
    ) -> pylon_common::vtl::Inputs {
        let body = body.or(self.body.map(|b| &b[..])).unwrap_or_default();
        let (headers, _) = self.headers_json();
        let header = headers
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        pylon_common::vtl::Inputs {
            body: String::from_utf8_lossy(body).into_owned(),
            path: self
                .params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            querystring: self
                .query_json()
                .as_object()
                .map(|q| {
                    q.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            header,
            context: ctx.to_value(),
            stage_variables: serde_json::to_value(self.variables).unwrap_or(Value::Null),
        }
    }

    pub fn params_json(&self) -> Value {
        Value::Object(
            self.params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                .collect(),
        )
    }

    /// The request as templates see it: `request.body` (JSON when it parses,
    /// else text), `request.headers`, `request.querystring`, `request.path`
    /// (parameters), `request.rawPath`.
    pub fn template_value(&self) -> Value {
        let body = match (self.body_json(), self.body) {
            (Some(json), _) => json.clone(),
            (None, Some(bytes)) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
            (None, None) => Value::Null,
        };
        serde_json::json!({
            "body": body,
            "headers": self.headers_json().0,
            "querystring": self.query_json(),
            "path": self.params_json(),
            "rawPath": self.path,
            "method": self.parts.method.as_str(),
        })
    }

    /// Evaluates a mapping value. A value that is one reference to something
    /// absent is `None` (the mapping is skipped); inside text, absent
    /// references are empty.
    pub fn eval(
        &self,
        value: &[Part],
        ctx: &RequestContext,
        response: Option<&ResponseInputs<'_>>,
    ) -> Option<String> {
        if let [Part::Ref(source)] = value {
            return self.resolve(source, ctx, response);
        }
        let mut out = String::new();
        for part in value {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Ref(source) => out.push_str(&self.resolve(source, ctx, response).unwrap_or_default()),
            }
        }
        Some(out)
    }

    fn resolve(
        &self,
        source: &Source,
        ctx: &RequestContext,
        response: Option<&ResponseInputs<'_>>,
    ) -> Option<String> {
        let from_json = |json: Option<&Value>, path: &serde_json_path::JsonPath| {
            let found = path.query(json?).first()?;
            Some(json_text(found).into_owned())
        };
        match source {
            Source::RequestHeader(name) => self.header(name.as_str()),
            Source::RequestQuery(name) => self.query(name),
            Source::RequestPath => Some(self.path.to_owned()),
            Source::RequestPathParam(name) => self.param(name).map(str::to_owned),
            Source::RequestBody(None) => self.body.map(|b| String::from_utf8_lossy(b).into_owned()),
            Source::RequestBody(Some(path)) => from_json(self.body_json(), path),
            Source::ResponseHeader(name) => response?
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            Source::ResponseBody(None) => response?.body.map(|b| String::from_utf8_lossy(b).into_owned()),
            Source::ResponseBody(Some(path)) => from_json(response?.body_json, path),
            Source::Context(name) => ctx.lookup(name).map(|v| v.into_owned()),
            Source::StageVariable(name) => self.variables.get(name).cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(lines: &[(&str, &[u8])]) -> Parts {
        let mut request = http::Request::builder().uri("/");
        for (name, value) in lines {
            let value = HeaderValue::from_bytes(value).expect("a header value");
            request = request.header(*name, value);
        }
        request.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn a_line_that_is_not_text_hides_no_other_line_and_is_no_credential() {
        let variables = BTreeMap::new();
        let forged = parts(&[
            ("authorization", b"Bearer forged\xff"),
            ("authorization", b"Bearer alice"),
        ]);
        let inputs = Inputs::new(&forged, "/", &[], &variables, None);
        // Mappings and templates see both lines, as the backend gets them.
        assert_eq!(
            inputs.header("authorization").as_deref(),
            Some("Bearer forged\u{FFFD},Bearer alice")
        );
        let (single, multi) = inputs.headers_json();
        assert_eq!(single["authorization"], "Bearer forged\u{FFFD},Bearer alice");
        assert_eq!(multi["authorization"].as_array().map(Vec::len), Some(2));
        // An authorizer sees no credential at all.
        assert_eq!(inputs.credential("authorization", false), None);
        assert_eq!(inputs.credential("authorization", true), None);

        let twice = parts(&[("x-token", b"a"), ("x-token", b"b")]);
        let inputs = Inputs::new(&twice, "/", &[], &variables, None);
        assert_eq!(inputs.credential("x-token", false).as_deref(), Some("a,b"));
        assert_eq!(
            inputs.credential("x-token", true),
            None,
            "a bearer token comes once"
        );

        let clean = parts(&[("authorization", b"Bearer alice")]);
        let inputs = Inputs::new(&clean, "/", &[], &variables, None);
        assert_eq!(
            inputs.credential("authorization", true).as_deref(),
            Some("Bearer alice")
        );
        let padded = parts(&[("x-token", b" alice ")]);
        let inputs = Inputs::new(&padded, "/", &[], &variables, None);
        assert_eq!(inputs.credential("x-token", false), None, "read two ways");
        assert_eq!(inputs.credential("x-missing", false), None);
    }
}
