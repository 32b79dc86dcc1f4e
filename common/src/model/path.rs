//! Route path templates: `/pets/{id}`, `/files/{proxy+}`.

use std::fmt;

/// One segment of a [`PathTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSegment {
    Literal(String),
    /// `{name}`: exactly one segment.
    Param(String),
    /// `{name+}`: the rest of the path; only ever last.
    Greedy(String),
}

/// A parsed, valid route path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<PathSegment>,
}

impl PathTemplate {
    /// Parses a template, explaining the first thing wrong with it.
    pub fn parse(template: &str) -> Result<PathTemplate, String> {
        if template.len() > 1024 {
            return Err("must be at most 1024 characters".into());
        }
        let Some(rest) = template.strip_prefix('/') else {
            return Err("must start with '/'".into());
        };
        if rest.is_empty() {
            return Ok(PathTemplate { segments: vec![] });
        }
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            if part.is_empty() {
                return Err("must not contain empty segments or end with '/'".into());
            }
            if let Some(inner) = part.strip_prefix('{') {
                let Some(inner) = inner.strip_suffix('}') else {
                    return Err(format!("segment {part:?}: a parameter is written {{name}}"));
                };
                let (name, greedy) = match inner.strip_suffix('+') {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                if !super::is_name(name, 128, b"_-") {
                    return Err(format!(
                        "segment {part:?}: parameter names are 1-128 chars of A-Z a-z 0-9 _ -"
                    ));
                }
                if greedy && !last {
                    return Err(format!("segment {part:?}: a greedy parameter must be last"));
                }
                let duplicate = segments.iter().any(|s| match s {
                    PathSegment::Param(n) | PathSegment::Greedy(n) => n == name,
                    PathSegment::Literal(_) => false,
                });
                if duplicate {
                    return Err(format!("parameter {name:?} appears twice"));
                }
                segments.push(if greedy {
                    PathSegment::Greedy(name.to_owned())
                } else {
                    PathSegment::Param(name.to_owned())
                });
            } else {
                let ok = part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:@!$&'()*,;=".contains(&b));
                if !ok {
                    return Err(format!(
                        "segment {part:?}: contains a character not allowed in a path"
                    ));
                }
                segments.push(PathSegment::Literal((*part).to_owned()));
            }
        }
        Ok(PathTemplate { segments })
    }

    pub fn segments(&self) -> &[PathSegment] {
        &self.segments
    }

    /// Parameter names, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            PathSegment::Param(n) | PathSegment::Greedy(n) => Some(n.as_str()),
            PathSegment::Literal(_) => None,
        })
    }

    /// The template with parameter names erased: two routes with the same shape
    /// (`/pets/{id}` and `/pets/{petId}`) would be ambiguous.
    pub fn shape(&self) -> String {
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            match s {
                PathSegment::Literal(l) => out.push_str(l),
                PathSegment::Param(_) => out.push_str("{}"),
                PathSegment::Greedy(_) => out.push_str("{+}"),
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segments.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segments {
            match s {
                PathSegment::Literal(l) => write!(f, "/{l}")?,
                PathSegment::Param(n) => write!(f, "/{{{n}}}")?,
                PathSegment::Greedy(n) => write!(f, "/{{{n}+}}")?,
            }
        }
        Ok(())
    }
}
