//! Running a parsed template against a request's (or an integration
//! response's) inputs.

use super::parse::{Access, Expr, Node, Op, Reference};
use super::{FUEL, MAX_OUTPUT};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What `$input`, `$context` and `$stageVariables` read.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// `$input.body` (and what `json`/`path` parse): the request's body in a
    /// request template, the integration's answer in a response template.
    pub body: String,
    pub path: BTreeMap<String, String>,
    pub querystring: BTreeMap<String, String>,
    pub header: BTreeMap<String, String>,
    /// `$context` (an object).
    pub context: Value,
    /// `$stageVariables` (an object).
    pub stage_variables: Value,
}

/// What the template set in `$context.responseOverride`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Override {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
}

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the template ran out of fuel ({FUEL} steps): a loop too long")]
    OutOfFuel,
    #[error("the template wrote more than {MAX_OUTPUT} bytes")]
    TooLarge,
    #[error("$context.responseOverride.status {0} is not a status (200..=599)")]
    BadStatus(String),
    #[error("a value the template built is over {MAX_OUTPUT} bytes")]
    ValueTooLarge,
    #[error("the template handled more than {WORK} bytes of values: too much work")]
    TooMuchWork,
    #[error("the JSONPath {0:?} has more than one recursive descent (..)")]
    PathTooBroad(String),
}

/// Bytes of values one render may build or scan (each value built, each
/// string a method reads, each body a JSONPath reads, counts). With every
/// value at most [`MAX_OUTPUT`] bytes, this bounds a render's memory and
/// time whatever the template loops over.
pub const WORK: usize = 64 * 1024 * 1024;

/// Renders `nodes`: the text and what the template overrode.
///
/// # Errors
/// [`RenderError`]: out of fuel, output over the bound, an override status
/// that is not one.
pub fn render(nodes: &[Node], inputs: &Inputs) -> Result<(String, Override), RenderError> {
    let mut variables = BTreeMap::new();
    variables.insert("context".to_owned(), inputs.context.clone());
    variables.insert("stageVariables".to_owned(), inputs.stage_variables.clone());
    let mut machine = Machine {
        inputs,
        variables,
        fuel: FUEL,
        work: WORK,
        body_json: None,
    };
    let mut out = String::new();
    machine.nodes(nodes, &mut out)?;
    let mut result = Override::default();
    if let Some(over) = machine
        .variables
        .get("context")
        .and_then(|c| c.get("responseOverride"))
    {
        if let Some(status) = over.get("status").filter(|s| !s.is_null()) {
            let text = text_of(status);
            let code = text
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .ok_or(RenderError::BadStatus(text))?;
            result.status = Some(code);
        }
        if let Some(headers) = over.get("header").and_then(Value::as_object) {
            result.headers = headers.iter().map(|(k, v)| (k.clone(), text_of(v))).collect();
        }
    }
    Ok((out, result))
}

/// What a control-flow step asks of the enclosing loop.
#[derive(PartialEq)]
enum Flow {
    Next,
    Break,
}

struct Machine<'a> {
    inputs: &'a Inputs,
    variables: BTreeMap<String, Value>,
    fuel: u64,
    /// Bytes of values still to build or scan.
    work: usize,
    body_json: Option<Value>,
}

impl Machine<'_> {
    fn burn(&mut self) -> Result<(), RenderError> {
        self.fuel = self.fuel.checked_sub(1).ok_or(RenderError::OutOfFuel)?;
        Ok(())
    }

    fn charge(&mut self, bytes: usize) -> Result<(), RenderError> {
        self.work = self.work.checked_sub(bytes).ok_or(RenderError::TooMuchWork)?;
        Ok(())
    }

    /// A value the template built: at most [`MAX_OUTPUT`] bytes, charged.
    fn produced(&mut self, value: Value) -> Result<Value, RenderError> {
        let size = size_capped(&value, MAX_OUTPUT);
        if size > MAX_OUTPUT {
            return Err(RenderError::ValueTooLarge);
        }
        self.charge(size)?;
        Ok(value)
    }

    fn nodes(&mut self, nodes: &[Node], out: &mut String) -> Result<Flow, RenderError> {
        for node in nodes {
            self.burn()?;
            match node {
                Node::Text(text) => push(out, text)?,
                Node::Ref {
                    reference,
                    quiet,
                    source,
                } => {
                    let value = self.reference(reference)?;
                    match value {
                        Value::Null if *quiet => {}
                        Value::Null => push(out, source)?,
                        value => push(out, &text_of(&value))?,
                    }
                }
                Node::Set(target, value) => {
                    let value = self.expr(value)?;
                    self.assign(target, value)?;
                }
                Node::If { branches, otherwise } => {
                    let mut taken = None;
                    for (condition, body) in branches {
                        if truthy(&self.expr(condition)?) {
                            taken = Some(body);
                            break;
                        }
                    }
                    if self.nodes(taken.unwrap_or(otherwise), out)? == Flow::Break {
                        return Ok(Flow::Break);
                    }
                }
                Node::Foreach {
                    variable,
                    items,
                    body,
                } => {
                    let items = match self.expr(items)? {
                        Value::Array(items) => items,
                        Value::Object(map) => map.into_iter().map(|(_, v)| v).collect(),
                        _ => Vec::new(),
                    };
                    let count = items.len();
                    for (i, item) in items.into_iter().enumerate() {
                        self.burn()?;
                        self.variables.insert(variable.clone(), item);
                        let info = serde_json::json!({
                            "hasNext": i + 1 < count,
                            "index": i,
                            "count": i + 1,
                            "first": i == 0,
                            "last": i + 1 == count,
                        });
                        self.variables.insert("foreach".to_owned(), info);
                        self.variables
                            .insert("velocityCount".to_owned(), Value::from(i + 1));
                        if self.nodes(body, out)? == Flow::Break {
                            break;
                        }
                    }
                }
                Node::Break => return Ok(Flow::Break),
            }
        }
        Ok(Flow::Next)
    }

    fn assign(&mut self, target: &Reference, value: Value) -> Result<(), RenderError> {
        if matches!(target.root.as_str(), "input" | "util") {
            return Ok(());
        }
        let slot = self.variables.entry(target.root.clone()).or_insert(Value::Null);
        let mut slot = slot;
        for access in &target.path {
            let key = match access {
                Access::Property(name) => name.clone(),
                Access::Index(_) | Access::Call(..) => return Ok(()),
            };
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            let Value::Object(map) = slot else { return Ok(()) };
            slot = map.entry(key).or_insert(Value::Null);
        }
        *slot = value;
        Ok(())
    }

    fn reference(&mut self, reference: &Reference) -> Result<Value, RenderError> {
        self.burn()?;
        let mut path = reference.path.iter();
        let mut value = match reference.root.as_str() {
            "input" => match path.next() {
                Some(Access::Property(name)) if name == "body" => Value::String(self.inputs.body.clone()),
                Some(Access::Call(name, args)) => {
                    let args = self.args(args)?;
                    self.input(name, &args)?
                }
                _ => Value::Null,
            },
            "util" => match path.next() {
                Some(Access::Call(name, args)) => {
                    let args = self.args(args)?;
                    self.charge(args.iter().map(text_len).sum())?;
                    util(name, &args)?
                }
                _ => Value::Null,
            },
            name => {
                let found = self.variables.get(name).map_or(0, |v| size_capped(v, MAX_OUTPUT));
                // Reading a variable copies it: charged like building it.
                self.charge(found)?;
                self.variables.get(name).cloned().unwrap_or(Value::Null)
            }
        };
        for access in path {
            self.burn()?;
            value = match access {
                Access::Property(name) => property(&value, name),
                Access::Index(index) => {
                    let index = self.expr(index)?;
                    match (&value, &index) {
                        (Value::Array(items), Value::Number(n)) => n
                            .as_i64()
                            .and_then(|i| usize::try_from(i).ok())
                            .and_then(|i| items.get(i).cloned())
                            .unwrap_or(Value::Null),
                        (Value::Object(map), key) => map.get(&text_of(key)).cloned().unwrap_or(Value::Null),
                        _ => Value::Null,
                    }
                }
                Access::Call(name, args) => {
                    let args = self.args(args)?;
                    // Methods read their receiver and arguments.
                    self.charge(text_len(&value) + args.iter().map(text_len).sum::<usize>())?;
                    method(&value, name, &args)?
                }
            };
        }
        self.produced(value)
    }

    fn args(&mut self, args: &[Expr]) -> Result<Vec<Value>, RenderError> {
        args.iter().map(|a| self.expr(a)).collect()
    }

    fn body_json(&mut self) -> Value {
        if self.body_json.is_none() {
            let parsed = serde_json::from_str(&self.inputs.body).unwrap_or(Value::Null);
            self.body_json = Some(parsed);
        }
        self.body_json.clone().unwrap_or(Value::Null)
    }

    /// `$input.json(p)`, `$input.path(p)`, `$input.params(…)`.
    fn input(&mut self, name: &str, args: &[Value]) -> Result<Value, RenderError> {
        Ok(match (name, args) {
            ("json", [path]) => {
                let selected = self.select(&text_of(path))?;
                Value::String(serde_json::to_string(&selected).unwrap_or_default())
            }
            ("path", [path]) => self.select(&text_of(path))?,
            ("params", []) => serde_json::json!({
                "path": self.inputs.path,
                "querystring": self.inputs.querystring,
                "header": self.inputs.header,
            }),
            ("params", [name]) => {
                let name = text_of(name);
                let found = self
                    .inputs
                    .path
                    .get(&name)
                    .or_else(|| self.inputs.querystring.get(&name))
                    .or_else(|| {
                        self.inputs
                            .header
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                            .map(|(_, v)| v)
                    });
                Value::String(found.cloned().unwrap_or_default())
            }
            _ => Value::Null,
        })
    }

    /// A JSONPath into the body: one match as itself, several as a list,
    /// none as null.
    fn select(&mut self, path: &str) -> Result<Value, RenderError> {
        // A path reads the whole body.
        self.charge(self.inputs.body.len())?;
        let body = self.body_json();
        if path.trim() == "$" {
            return Ok(body);
        }
        // Each recursive descent multiplies the matches (`$..*..*` on a deep
        // body is quadratic): one is allowed.
        if path.matches("..").count() > 1 {
            return Err(RenderError::PathTooBroad(path.to_owned()));
        }
        let Ok(parsed) = serde_json_path::JsonPath::parse(path) else {
            return Ok(Value::Null);
        };
        let found: Vec<&Value> = parsed.query(&body).all();
        // Sized before they are copied.
        let mut total = 0;
        for one in &found {
            total += size_capped(one, MAX_OUTPUT);
            if total > MAX_OUTPUT {
                return Err(RenderError::ValueTooLarge);
            }
        }
        Ok(match found.as_slice() {
            [] => Value::Null,
            [one] => (*one).clone(),
            many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
        })
    }

    fn expr(&mut self, expr: &Expr) -> Result<Value, RenderError> {
        self.burn()?;
        let value = self.expr_value(expr)?;
        match expr {
            // Already charged where they were read.
            Expr::Ref(_) | Expr::Literal(_) => Ok(value),
            _ => self.produced(value),
        }
    }

    fn expr_value(&mut self, expr: &Expr) -> Result<Value, RenderError> {
        Ok(match expr {
            Expr::Literal(value) => value.clone(),
            Expr::Interpolated(nodes) => {
                let mut text = String::new();
                self.nodes(nodes, &mut text)?;
                Value::String(text)
            }
            Expr::Ref(reference) => self.reference(reference)?,
            Expr::List(items) => Value::Array(items.iter().map(|i| self.expr(i)).collect::<Result<_, _>>()?),
            Expr::Map(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    let key = text_of(&self.expr(k)?);
                    map.insert(key, self.expr(v)?);
                }
                Value::Object(map)
            }
            Expr::Range(from, to) => {
                let from = self.expr(from)?.as_i64().unwrap_or(0);
                let to = self.expr(to)?.as_i64().unwrap_or(0);
                let len = from.abs_diff(to) + 1;
                if len > FUEL {
                    return Err(RenderError::OutOfFuel);
                }
                if from <= to {
                    (from..=to).map(Value::from).collect()
                } else {
                    (to..=from).rev().map(Value::from).collect()
                }
            }
            Expr::Not(inner) => Value::Bool(!truthy(&self.expr(inner)?)),
            Expr::Negate(inner) => match self.expr(inner)? {
                Value::Number(n) => n
                    .as_i64()
                    .map(|i| Value::from(-i))
                    .or_else(|| n.as_f64().map(|f| Value::from(-f)))
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            },
            Expr::Binary(Op::And, a, b) => Value::Bool(truthy(&self.expr(a)?) && truthy(&self.expr(b)?)),
            Expr::Binary(Op::Or, a, b) => Value::Bool(truthy(&self.expr(a)?) || truthy(&self.expr(b)?)),
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                if *op == Op::Add && text_len(&a) + text_len(&b) > MAX_OUTPUT {
                    return Err(RenderError::ValueTooLarge);
                }
                binary(*op, &a, &b)
            }
        })
    }
}

fn push(out: &mut String, text: &str) -> Result<(), RenderError> {
    if out.len() + text.len() > MAX_OUTPUT {
        return Err(RenderError::TooLarge);
    }
    out.push_str(text);
    Ok(())
}

/// Velocity's truth: everything but null and false.
fn truthy(value: &Value) -> bool {
    !matches!(value, Value::Null | Value::Bool(false))
}

/// How long a value's printed text is, roughly (strings exactly).
fn text_len(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        other => size_capped(other, MAX_OUTPUT),
    }
}

/// The size of a value in bytes (strings by length, 8 per scalar and per
/// container), counted only up to just past `cap`.
pub fn size_capped(value: &Value, cap: usize) -> usize {
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        total = total.saturating_add(match value {
            Value::String(s) => s.len() + 8,
            Value::Array(items) => {
                stack.extend(items.iter());
                8
            }
            Value::Object(map) => {
                for (k, v) in map {
                    total = total.saturating_add(k.len());
                    stack.push(v);
                }
                8
            }
            _ => 8,
        });
        if total > cap {
            return total;
        }
    }
    total
}

/// A value as Java prints it inside a list or map (`null` shows).
fn element_text(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        other => text_of(other),
    }
}

/// A value as Java prints it.
pub fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                n.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e7 {
                    format!("{f:.1}")
                } else {
                    f.to_string()
                }
            }
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(element_text).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{k}={}", element_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

fn binary(op: Op, a: &Value, b: &Value) -> Value {
    let both_ints = matches!((a, b), (Value::Number(x), Value::Number(y)) if x.is_i64() && y.is_i64());
    match op {
        Op::Eq | Op::Ne => {
            let equal = match (number(a), number(b)) {
                (Some(x), Some(y)) => x == y,
                _ => match (a, b) {
                    (Value::Null, Value::Null) => true,
                    (Value::Null, _) | (_, Value::Null) => false,
                    _ => text_of(a) == text_of(b),
                },
            };
            Value::Bool(equal == (op == Op::Eq))
        }
        Op::Lt | Op::Le | Op::Gt | Op::Ge => {
            let ordering = match (number(a), number(b)) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => Some(text_of(a).cmp(&text_of(b))),
            };
            let Some(ordering) = ordering else {
                return Value::Bool(false);
            };
            Value::Bool(match op {
                Op::Lt => ordering.is_lt(),
                Op::Le => ordering.is_le(),
                Op::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }
        Op::Add if !(matches!(a, Value::Number(_)) && matches!(b, Value::Number(_))) => {
            Value::String(format!("{}{}", text_of(a), text_of(b)))
        }
        _ => {
            let (Some(x), Some(y)) = (number(a), number(b)) else {
                return Value::Null;
            };
            if both_ints {
                let (x, y) = (a.as_i64().unwrap_or(0), b.as_i64().unwrap_or(0));
                return match op {
                    Op::Add => x.checked_add(y).map_or(Value::Null, Value::from),
                    Op::Sub => x.checked_sub(y).map_or(Value::Null, Value::from),
                    Op::Mul => x.checked_mul(y).map_or(Value::Null, Value::from),
                    Op::Div => x.checked_div(y).map_or(Value::Null, Value::from),
                    Op::Mod => x.checked_rem(y).map_or(Value::Null, Value::from),
                    _ => Value::Null,
                };
            }
            let result = match op {
                Op::Add => x + y,
                Op::Sub => x - y,
                Op::Mul => x * y,
                Op::Div if y != 0.0 => x / y,
                Op::Mod if y != 0.0 => x % y,
                _ => return Value::Null,
            };
            serde_json::Number::from_f64(result).map_or(Value::Null, Value::Number)
        }
    }
}

fn property(value: &Value, name: &str) -> Value {
    match value {
        Value::Object(map) => get_ignoring_case(map, name).cloned().unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn char_index(text: &str, value: Option<&Value>) -> Option<usize> {
    let i = value?.as_i64()?;
    let i = usize::try_from(i).ok()?;
    (i <= text.chars().count()).then_some(i)
}

/// Java-style methods on strings, numbers, lists and maps.
fn method(value: &Value, name: &str, args: &[Value]) -> Result<Value, RenderError> {
    if name == "toString" && args.is_empty() {
        return Ok(match value {
            Value::Null => Value::Null,
            other => Value::String(text_of(other)),
        });
    }
    if name == "equals" {
        return Ok(args
            .first()
            .map_or(Value::Null, |other| binary(Op::Eq, value, other)));
    }
    Ok(match value {
        Value::String(s) => string_method(s, name, args)?,
        Value::Array(items) => match (name, args) {
            ("size", []) => Value::from(items.len()),
            ("isEmpty", []) => Value::Bool(items.is_empty()),
            ("get", [Value::Number(n)]) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| items.get(i).cloned())
                .unwrap_or(Value::Null),
            ("contains", [x]) => Value::Bool(items.iter().any(|i| binary(Op::Eq, i, x) == Value::Bool(true))),
            _ => Value::Null,
        },
        Value::Object(map) => match (name, args) {
            ("size", []) => Value::from(map.len()),
            ("isEmpty", []) => Value::Bool(map.is_empty()),
            ("get", [key]) => get_ignoring_case(map, &text_of(key))
                .cloned()
                .unwrap_or(Value::Null),
            ("containsKey", [key]) => Value::Bool(get_ignoring_case(map, &text_of(key)).is_some()),
            ("keySet", []) => Value::Array(map.keys().map(|k| Value::String(k.clone())).collect()),
            ("values", []) => Value::Array(map.values().cloned().collect()),
            ("entrySet", []) => Value::Array(
                map.iter()
                    .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                    .collect(),
            ),
            _ => Value::Null,
        },
        Value::Number(_) => match name {
            "intValue" | "longValue" => value
                .as_f64()
                .map_or(Value::Null, |f| Value::from(f.trunc() as i64)),
            "doubleValue" => value.as_f64().map_or(Value::Null, Value::from),
            _ => Value::Null,
        },
        _ => Value::Null,
    })
}

/// Case-insensitive map lookup for header maps: HTTP names are
/// case-insensitive, and the gateway holds them lowercase.
fn get_ignoring_case<'m>(map: &'m Map<String, Value>, key: &str) -> Option<&'m Value> {
    map.get(key).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn string_method(s: &str, name: &str, args: &[Value]) -> Result<Value, RenderError> {
    let arg = |i: usize| args.get(i).map(text_of).unwrap_or_default();
    // What a replacement would write, known before writing it.
    let replaced_len = |count: usize, with: usize| s.len().saturating_add(count.saturating_mul(with));
    if matches!(name, "replace" | "replaceAll" | "replaceFirst") && args.len() == 2 {
        let with = arg(1).len();
        let count = match name {
            "replace" if !arg(0).is_empty() => s.matches(arg(0).as_str()).count(),
            "replace" => s.chars().count() + 1,
            "replaceFirst" => 1,
            _ => regex::Regex::new(&arg(0)).map_or(0, |re| re.find_iter(s).count()),
        };
        if replaced_len(count, with) > MAX_OUTPUT {
            return Err(RenderError::ValueTooLarge);
        }
    }
    Ok(match (name, args.len()) {
        ("length", 0) | ("size", 0) => Value::from(s.chars().count()),
        ("isEmpty", 0) => Value::Bool(s.is_empty()),
        ("contains", 1) => Value::Bool(s.contains(&arg(0))),
        ("startsWith", 1) => Value::Bool(s.starts_with(&arg(0))),
        ("endsWith", 1) => Value::Bool(s.ends_with(&arg(0))),
        ("toLowerCase", 0) => Value::String(s.to_lowercase()),
        ("toUpperCase", 0) => Value::String(s.to_uppercase()),
        ("trim", 0) => Value::String(s.trim().to_owned()),
        ("indexOf", 1) => Value::from(
            s.find(&arg(0))
                .map_or(-1, |byte| i64::try_from(s[..byte].chars().count()).unwrap_or(-1)),
        ),
        ("replace", 2) => Value::String(s.replace(&arg(0), &arg(1))),
        ("replaceAll", 2) | ("replaceFirst", 2) => match regex::Regex::new(&arg(0)) {
            Ok(re) if name == "replaceAll" => Value::String(re.replace_all(s, arg(1).as_str()).into_owned()),
            Ok(re) => Value::String(re.replace(s, arg(1).as_str()).into_owned()),
            Err(_) => Value::Null,
        },
        ("matches", 1) => match regex::Regex::new(&format!("^(?:{})$", arg(0))) {
            Ok(re) => Value::Bool(re.is_match(s)),
            Err(_) => Value::Null,
        },
        ("split", 1) => match regex::Regex::new(&arg(0)) {
            Ok(re) => {
                let mut parts: Vec<Value> = re.split(s).map(|p| Value::String(p.to_owned())).collect();
                // Java drops trailing empty strings.
                while parts.last().is_some_and(|p| p.as_str() == Some("")) {
                    parts.pop();
                }
                Value::Array(parts)
            }
            Err(_) => Value::Null,
        },
        ("substring", 1 | 2) => {
            let chars: Vec<char> = s.chars().collect();
            let start = char_index(s, args.first());
            let end = if args.len() == 2 {
                char_index(s, args.get(1))
            } else {
                Some(chars.len())
            };
            match (start, end) {
                (Some(a), Some(b)) if a <= b => Value::String(chars[a..b].iter().collect()),
                _ => Value::Null,
            }
        }
        ("charAt", 1) => char_index(s, args.first())
            .and_then(|i| s.chars().nth(i))
            .map_or(Value::Null, |c| Value::String(c.to_string())),
        _ => Value::Null,
    })
}

/// `$util.…`.
fn util(name: &str, args: &[Value]) -> Result<Value, RenderError> {
    let Some(first) = args.first() else {
        return Ok(Value::Null);
    };
    let text = text_of(first);
    // escapeJavaScript writes at most 12 bytes per character, urlEncode 9.
    if matches!(name, "escapeJavaScript" | "urlEncode") && text.len().saturating_mul(4) > MAX_OUTPUT {
        return Err(RenderError::ValueTooLarge);
    }
    Ok(match name {
        "escapeJavaScript" => Value::String(escape_javascript(&text)),
        "urlEncode" => Value::String(form_urlencoded::byte_serialize(text.as_bytes()).collect()),
        "urlDecode" => Value::String(
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        ),
        "base64Encode" => Value::String(base64::engine::general_purpose::STANDARD.encode(text.as_bytes())),
        "base64Decode" => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(|bytes| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
            .unwrap_or(Value::Null),
        "parseJson" => serde_json::from_str(&text).unwrap_or(Value::Null),
        _ => Value::Null,
    })
}

/// Apache Commons' `escapeJavaScript`, which API Gateway uses: quotes,
/// backslash and `/` escaped, control characters and everything beyond
/// ASCII as `\uXXXX`.
fn escape_javascript(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7f => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04X}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out
}
