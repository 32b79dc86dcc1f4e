//! CloudFormation wrappers in an exported definition: a `DefinitionBody`
//! copied out of a SAM or CloudFormation template still holds `Fn::Sub`,
//! `Ref`, `Fn::GetAtt` and `Fn::Join` (long form, or the YAML short tags
//! `!Sub`, `!Ref`, `!GetAtt`, `!Join`), and plain strings may hold `${name}`
//! placeholders a deployment script was to fill. They are resolved from the
//! importer's variables (`--set-var NAME=VALUE`; `Ref X` reads `X`,
//! `Fn::GetAtt [R, A]` reads `R.A`); what stays unresolved is reported by
//! name and path.
//!
//! `${stageVariables.NAME}` and `${context.NAME}` are API Gateway's own
//! references, not placeholders, and are kept.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// YAML short-form tags become their long form: `!Sub x` → `{"Fn::Sub": x}`,
/// `!Ref x` → `{"Ref": x}`, `!GetAtt a.b` → `{"Fn::GetAtt": "a.b"}`.
pub fn from_yaml(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(from_yaml).collect()),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_norway::to_string(&other)
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_default(),
                };
                out.insert(key, from_yaml(v));
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let long = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            let mut out = Map::new();
            out.insert(long, from_yaml(tagged.value));
            Value::Object(out)
        }
    }
}

/// Resolves every CloudFormation function and placeholder in `value`,
/// returning the names left unresolved with where they were (JSON path).
pub fn resolve(
    value: &mut Value,
    variables: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut missing = BTreeMap::new();
    walk(value, variables, "$", &mut missing);
    missing
}

fn walk(
    value: &mut Value,
    variables: &BTreeMap<String, String>,
    at: &str,
    missing: &mut BTreeMap<String, BTreeSet<String>>,
) {
    let miss = |name: &str, missing: &mut BTreeMap<String, BTreeSet<String>>| {
        missing.entry(name.to_owned()).or_default().insert(at.to_owned());
    };
    if let Value::Object(map) = value
        && map.len() == 1
        && let Some((key, inner)) = map.iter().next()
        && (key == "Ref" || key.starts_with("Fn::"))
    {
        let key = key.clone();
        let inner = inner.clone();
        let resolved = match key.as_str() {
            "Ref" => match inner.as_str() {
                Some(name) => match variables.get(name) {
                    Some(v) => Some(v.clone()),
                    None => {
                        miss(name, missing);
                        None
                    }
                },
                None => None,
            },
            "Fn::GetAtt" => {
                let name = match &inner {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(parts) => Some(
                        parts
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join("."),
                    ),
                    _ => None,
                };
                name.and_then(|name| match variables.get(&name) {
                    Some(v) => Some(v.clone()),
                    None => {
                        miss(&name, missing);
                        None
                    }
                })
            }
            "Fn::Sub" => {
                let (template, local) = match &inner {
                    Value::String(s) => (s.clone(), Map::new()),
                    Value::Array(parts) => (
                        parts.first().and_then(Value::as_str).unwrap_or("").to_owned(),
                        parts
                            .get(1)
                            .and_then(Value::as_object)
                            .cloned()
                            .unwrap_or_default(),
                    ),
                    _ => (String::new(), Map::new()),
                };
                let mut local_values = variables.clone();
                for (name, v) in local {
                    let mut v = v;
                    walk(&mut v, variables, at, missing);
                    if let Some(s) = v.as_str() {
                        local_values.insert(name, s.to_owned());
                    }
                }
                let (text, unresolved) = substitute(&template, &local_values, true);
                for name in &unresolved {
                    miss(name, missing);
                }
                unresolved.is_empty().then_some(text)
            }
            "Fn::Join" => {
                let parts = inner.as_array().cloned().unwrap_or_default();
                let separator = parts.first().and_then(Value::as_str).unwrap_or("").to_owned();
                let mut items = parts.get(1).cloned().unwrap_or(Value::Array(vec![]));
                walk(&mut items, variables, at, missing);
                items.as_array().and_then(|items| {
                    items
                        .iter()
                        .map(|i| i.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .map(|strings| strings.join(&separator))
                })
            }
            other => {
                miss(other, missing);
                None
            }
        };
        if let Some(text) = resolved {
            *value = Value::String(text);
        }
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                walk(v, variables, &format!("{at}.{k}"), missing);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                walk(v, variables, &format!("{at}[{i}]"), missing);
            }
        }
        Value::String(s) if s.contains("${") => {
            // A plain string: only the placeholders given a value are
            // filled; the rest are reported where they matter (URIs).
            let (text, _) = substitute(s, variables, false);
            *s = text;
        }
        _ => {}
    }
}

/// Fills `${name}` from `values`; `${!x}` is the literal `${x}`; API Gateway's
/// own `${stageVariables.*}` / `${context.*}` / `${request.*}` are kept.
/// Returns the text and the names not found (only when `strict`).
pub fn substitute(template: &str, values: &BTreeMap<String, String>, strict: bool) -> (String, Vec<String>) {
    let mut out = String::with_capacity(template.len());
    let mut unresolved = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        if let Some(literal) = name.strip_prefix('!') {
            out.push_str("${");
            out.push_str(literal);
            out.push('}');
        } else if let Some(v) = values.get(name) {
            out.push_str(v);
        } else {
            if strict && !is_gateway_reference(name) {
                unresolved.push(name.to_owned());
            }
            out.push_str("${");
            out.push_str(name);
            out.push('}');
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    (out, unresolved)
}

/// API Gateway's own `${…}` references, which are not placeholders.
pub fn is_gateway_reference(name: &str) -> bool {
    [
        "stageVariables.",
        "context.",
        "request.",
        "method.",
        "integration.",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// The `${name}` placeholders left in `text` that are not API Gateway's.
pub fn placeholders(text: &str) -> Vec<String> {
    let (_, unresolved) = substitute(text, &BTreeMap::new(), true);
    unresolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sub_ref_getatt_and_join_are_resolved_from_the_variables() {
        let mut doc = json!({
            "a": {"Fn::Sub": "https://${Host}/v1/${stageVariables.v}"},
            "b": {"Ref": "Bucket"},
            "c": {"Fn::GetAtt": ["Fn", "Arn"]},
            "d": {"Fn::Join": ["", ["http://", {"Ref": "Host"}, "/x"]]},
            "e": {"Fn::Sub": ["${Scheme}://${Host}", {"Scheme": "https"}]},
        });
        let missing = resolve(
            &mut doc,
            &vars(&[("Host", "h.test"), ("Bucket", "b1"), ("Fn.Arn", "arn:1")]),
        );
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(doc["a"], "https://h.test/v1/${stageVariables.v}");
        assert_eq!(doc["b"], "b1");
        assert_eq!(doc["c"], "arn:1");
        assert_eq!(doc["d"], "http://h.test/x");
        assert_eq!(doc["e"], "https://h.test");
    }

    #[test]
    fn what_stays_unresolved_is_named_with_its_place() {
        let mut doc = json!({"paths": {"/x": {"get": {"uri": {"Fn::Sub": "https://${Api}.test"}, "role": {"Fn::ImportValue": "R"}}}}});
        let missing = resolve(&mut doc, &BTreeMap::new());
        assert_eq!(missing.keys().collect::<Vec<_>>(), ["Api", "Fn::ImportValue"]);
        assert!(missing["Api"].contains("$.paths./x.get.uri"), "{missing:?}");
    }

    #[test]
    fn yaml_short_tags_become_the_long_form() {
        let yaml: serde_norway::Value =
            serde_norway::from_str("title: !Sub 'api-${AWS::StackName}'\nuri: !Ref Url\n").expect("yaml");
        let value = from_yaml(yaml);
        assert_eq!(value["title"], json!({"Fn::Sub": "api-${AWS::StackName}"}));
        assert_eq!(value["uri"], json!({"Ref": "Url"}));
    }
}
