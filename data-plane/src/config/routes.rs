//! A deployment's routes compiled into lookup tables: method (or ANY) + path
//! template, the most specific path winning (literal over `{param}` over
//! `{proxy+}`, segment by segment, as AWS does).
//!
//! matchit does the path matching. Parameter names are positional inside the
//! tables (`{p2}` is "the parameter in segment 2"), so two routes may name the
//! same position differently; the route keeps the real names.

use super::RouteSettings;
use super::integration::CompiledIntegration;
use foldhash::{HashMap, HashMapExt};
use http::Method;
use pylon_common::model::{PathSegment, PathTemplate};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug)]
pub struct CompiledRoute {
    /// `GET /pets/{id}`.
    pub key: Arc<str>,
    /// Parameter names by segment position.
    params: Vec<(usize, String)>,
    pub integration: CompiledIntegration,
    pub settings: RouteSettings,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<CompiledRoute>,
    /// Per method: routes of that method, plus ANY routes of a shape the
    /// method has no route for.
    by_method: HashMap<Method, matchit::Router<usize>>,
    any: matchit::Router<usize>,
}

/// A matched route and its path parameters (raw, as sent by the client).
pub struct Matched<'a> {
    pub route: &'a CompiledRoute,
    pub params: Vec<(&'a str, String)>,
}

fn positional(template: &PathTemplate) -> String {
    let mut out = String::new();
    for (i, segment) in template.segments().iter().enumerate() {
        out.push('/');
        match segment {
            PathSegment::Literal(text) => out.push_str(text),
            PathSegment::Param(_) => out.push_str(&format!("{{p{i}}}")),
            PathSegment::Greedy(_) => out.push_str(&format!("{{*p{i}}}")),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl RouteTable {
    /// Builds the table; `routes` are `(method, template, integration,
    /// settings)` from a validated definition.
    pub fn build(
        routes: Vec<(String, PathTemplate, CompiledIntegration, RouteSettings)>,
    ) -> Result<RouteTable, String> {
        let mut table = RouteTable::default();
        let mut shapes: HashMap<Method, BTreeSet<String>> = HashMap::new();
        let mut any_routes = Vec::new();
        for (method, template, integration, settings) in routes {
            let index = table.routes.len();
            let path = positional(&template);
            let params = template
                .segments()
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    PathSegment::Param(name) | PathSegment::Greedy(name) => Some((i, name.clone())),
                    PathSegment::Literal(_) => None,
                })
                .collect();
            table.routes.push(CompiledRoute {
                key: format!("{method} {template}").into(),
                params,
                integration,
                settings,
            });
            if method == "ANY" {
                table
                    .any
                    .insert(path.clone(), index)
                    .map_err(|e| format!("route {method} {template}: {e}"))?;
                any_routes.push((path, index));
            } else {
                let method =
                    Method::from_bytes(method.as_bytes()).map_err(|e| format!("method {method}: {e}"))?;
                table
                    .by_method
                    .entry(method.clone())
                    .or_default()
                    .insert(path.clone(), index)
                    .map_err(|e| format!("route {method} {template}: {e}"))?;
                shapes.entry(method).or_default().insert(path);
            }
        }
        for (method, router) in &mut table.by_method {
            let taken = shapes.get(method);
            for (path, index) in &any_routes {
                if taken.is_some_and(|t| t.contains(path)) {
                    continue;
                }
                router
                    .insert(path.clone(), *index)
                    .map_err(|e| format!("route ANY {path} with {method}: {e}"))?;
            }
        }
        Ok(table)
    }

    pub fn find(&self, method: &Method, path: &str) -> Option<Matched<'_>> {
        let router = self.by_method.get(method).unwrap_or(&self.any);
        let found = router.at(path).ok()?;
        let route = self.routes.get(*found.value)?;
        let params = route
            .params
            .iter()
            .filter_map(|(i, name)| {
                let value = found.params.get(format!("p{i}"))?;
                Some((name.as_str(), value.to_owned()))
            })
            .collect();
        Some(Matched { route, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[&str]) -> RouteTable {
        let routes = routes
            .iter()
            .map(|r| {
                let (method, path) = r.split_once(' ').unwrap_or(("GET", r));
                let template = PathTemplate::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
                (
                    method.to_owned(),
                    template,
                    CompiledIntegration::test_mock(),
                    RouteSettings::default(),
                )
            })
            .collect();
        RouteTable::build(routes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn find(table: &RouteTable, method: &str, path: &str) -> Option<(String, Vec<(String, String)>)> {
        let method = Method::from_bytes(method.as_bytes()).ok()?;
        table.find(&method, path).map(|m| {
            (
                m.route.key.to_string(),
                m.params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            )
        })
    }

    #[test]
    fn the_most_specific_route_wins() {
        let t = table(&[
            "GET /pets",
            "GET /pets/{id}",
            "GET /pets/mine",
            "ANY /{proxy+}",
            "GET /",
        ]);
        assert_eq!(
            find(&t, "GET", "/pets").map(|m| m.0).as_deref(),
            Some("GET /pets")
        );
        assert_eq!(
            find(&t, "GET", "/pets/mine").map(|m| m.0).as_deref(),
            Some("GET /pets/mine")
        );
        assert_eq!(
            find(&t, "GET", "/pets/7"),
            Some(("GET /pets/{id}".into(), vec![("id".into(), "7".into())]))
        );
        assert_eq!(
            find(&t, "GET", "/pets/7/toys"),
            Some((
                "ANY /{proxy+}".into(),
                vec![("proxy".into(), "pets/7/toys".into())]
            ))
        );
        assert_eq!(find(&t, "GET", "/").map(|m| m.0).as_deref(), Some("GET /"));
    }

    #[test]
    fn a_method_falls_back_to_an_any_route() {
        let t = table(&["GET /pets/{id}", "ANY /pets/{name}", "POST /orders"]);
        assert_eq!(
            find(&t, "GET", "/pets/1").map(|m| m.0).as_deref(),
            Some("GET /pets/{id}")
        );
        assert_eq!(
            find(&t, "DELETE", "/pets/1"),
            Some(("ANY /pets/{name}".into(), vec![("name".into(), "1".into())]))
        );
        assert_eq!(
            find(&t, "POST", "/pets/1").map(|m| m.0).as_deref(),
            Some("ANY /pets/{name}")
        );
        assert_eq!(find(&t, "GET", "/orders"), None);
        assert_eq!(find(&t, "POST", "/nothing"), None);
    }

    #[test]
    fn a_greedy_parameter_needs_at_least_one_segment() {
        let t = table(&["GET /files/{path+}"]);
        assert_eq!(find(&t, "GET", "/files"), None);
        assert_eq!(
            find(&t, "GET", "/files/a/b.txt"),
            Some((
                "GET /files/{path+}".into(),
                vec![("path".into(), "a/b.txt".into())]
            ))
        );
    }

    #[test]
    fn differently_named_parameters_at_one_position_coexist() {
        let t = table(&["GET /users/{id}/posts", "GET /users/{name}/likes"]);
        assert_eq!(
            find(&t, "GET", "/users/ann/likes"),
            Some((
                "GET /users/{name}/likes".into(),
                vec![("name".into(), "ann".into())]
            ))
        );
    }
}
