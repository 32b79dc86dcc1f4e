//! The integration phase: call the route's backend (HTTP, HTTP_PROXY) or
//! answer from the route itself (MOCK).

pub mod h1;
pub mod http;
pub mod mock;
pub mod upstream;

use crate::error::GatewayError;
use std::collections::BTreeMap;

/// Refuses path-parameter values that could leave the integration's path
/// prefix once a backend normalises them: `.` and `..` segments, also
/// percent-encoded or followed by `;` path parameters, encoded slashes or
/// backslashes, and an encoded NUL (a backend in C may end the path there:
/// `..%00` would be `..`).
pub fn check_params(params: &[(&str, String)]) -> Result<(), GatewayError> {
    for (_, value) in params {
        let lower = value.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%00") || value.contains('\\') {
            return Err(GatewayError::MalformedRequest("Invalid path"));
        }
        // A dot segment, also with path parameters after it (`..;/`, which
        // Tomcat and Spring normalise away).
        let dots = lower.replace("%2e", ".").replace("%3b", ";");
        if dots
            .split('/')
            .map(|segment| segment.split(';').next().unwrap_or(""))
            .any(|name| name == "." || name == "..")
        {
            return Err(GatewayError::MalformedRequest("Invalid path"));
        }
    }
    Ok(())
}

/// Fills `${stageVariables.NAME}` from `variables` and `{name}` from the
/// route's path parameters; anything else is kept as written.
pub fn fill(template: &str, variables: &BTreeMap<String, String>, params: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find(['$', '{']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("${stageVariables.")
            && let Some(end) = after.find('}')
        {
            out.push_str(variables.get(&after[..end]).map(String::as_str).unwrap_or(""));
            rest = &after[end + 1..];
        } else if let Some(after) = tail.strip_prefix('{')
            && let Some(end) = after.find('}')
            && let Some((_, value)) = params.iter().find(|(name, _)| *name == &after[..end])
        {
            out.push_str(value);
            rest = &after[end + 1..];
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_variables_and_path_parameters_are_filled() {
        let variables = BTreeMap::from([("backend".to_owned(), "http://127.0.0.1:9".to_owned())]);
        let params = [("proxy", "pets/7".to_owned()), ("id", "7".to_owned())];
        assert_eq!(
            fill(
                "${stageVariables.backend}/{proxy}?id={id}&x={nope}",
                &variables,
                &params
            ),
            "http://127.0.0.1:9/pets/7?id=7&x={nope}"
        );
        assert_eq!(fill("${stageVariables.missing}/a", &variables, &params), "/a");
        assert_eq!(fill("$5 {", &variables, &params), "$5 {");
    }

    #[test]
    fn parameters_that_could_climb_out_of_the_path_are_refused() {
        for bad in [
            "..",
            "a/../b",
            "./x",
            "%2e%2E/admin",
            "..%2Fadmin",
            "a%5cb",
            "a\\b",
            "x/%2E",
            "..;/admin",
            ".;/x",
            "%2e%2e;/admin",
            "..%3b/admin",
            "a/..;jsessionid=1/b",
            "..%00",
            "%00../x",
        ] {
            assert!(check_params(&[("proxy", bad.to_owned())]).is_err(), "{bad}");
        }
        for good in ["pets/7", "a..b", "...", "%41", "file.txt", "v1.2/x"] {
            assert!(check_params(&[("proxy", good.to_owned())]).is_ok(), "{good}");
        }
    }
}
