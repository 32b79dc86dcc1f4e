//! Parsing the Velocity subset: text, references (`$a.b.c()`, `$!a`,
//! `${a}`), `#set`, `#if`/`#elseif`/`#else`/`#end` (also `#{else}`,
//! `#{end}`), `#foreach`/`#break`, `##` and `#* *#` comments. A directive
//! alone on its line takes its line with it (Velocity 2's "lines" space
//! gobbling), so templates written one directive per line render without
//! blank lines.

use serde_json::Value;

/// A parsed template.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Text(String),
    /// A reference rendered into the output; `quiet` (`$!x`) renders an
    /// absent value as nothing instead of the reference's own text.
    Ref {
        reference: Reference,
        quiet: bool,
        source: String,
    },
    Set(Reference, Expr),
    If {
        branches: Vec<(Expr, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Foreach {
        variable: String,
        items: Expr,
        body: Vec<Node>,
    },
    Break,
}

/// `$root.a.b(args)[i]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub root: String,
    pub path: Vec<Access>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    Property(String),
    Call(String, Vec<Expr>),
    Index(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    /// A double-quoted string: interpolated.
    Interpolated(Vec<Node>),
    Ref(Reference),
    List(Vec<Expr>),
    Map(Vec<(Expr, Expr)>),
    Range(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// A template outside the subset, or malformed: where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

const DIRECTIVES: &[&str] = &[
    "set", "if", "elseif", "else", "end", "foreach", "break", "stop", "macro", "define", "include", "parse",
    "evaluate",
];

/// Parses `source`.
///
/// # Errors
/// [`ParseError`] with the 1-based line: a directive outside the subset
/// (`#macro`, `#include`, `#parse`, `#evaluate`, `#define`, `#stop`), an
/// unclosed block, a malformed expression.
pub fn parse(source: &str) -> Result<Vec<Node>, ParseError> {
    let chars: Vec<char> = source.chars().collect();
    let mut parser = Parser {
        chars,
        pos: 0,
        depth: 0,
    };
    let (nodes, _) = parser.block(&[])?;
    Ok(nodes)
}

/// How a block ended.
enum Closing {
    Input,
    Else,
    End,
    ElseIf(Expr),
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Blocks and expressions open around the cursor.
    depth: usize,
}

/// How deeply blocks and expressions may nest (the parser and the renderer
/// recurse once per level).
const MAX_DEPTH: usize = 64;

impl Parser {
    fn error(&self, message: impl Into<String>) -> ParseError {
        let line = self.chars[..self.pos.min(self.chars.len())]
            .iter()
            .filter(|c| **c == '\n')
            .count()
            + 1;
        ParseError {
            line,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn starts_with(&self, text: &str) -> bool {
        text.chars().enumerate().all(|(i, c)| self.peek_at(i) == Some(c))
    }

    /// Nodes up to one of `ends` (`else`, `elseif`, `end`) or the end of
    /// the input; returns which end was met.
    fn block(&mut self, ends: &[&str]) -> Result<(Vec<Node>, Closing), ParseError> {
        self.enter()?;
        let result = self.block_inner(ends);
        self.depth -= 1;
        result
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn block_inner(&mut self, ends: &[&str]) -> Result<(Vec<Node>, Closing), ParseError> {
        let mut nodes = Vec::new();
        let mut text = String::new();
        while let Some(c) = self.peek() {
            match c {
                '\\' if matches!(self.peek_at(1), Some('$' | '#')) => {
                    text.push(self.peek_at(1).unwrap_or('$'));
                    self.pos += 2;
                }
                '#' if self.peek_at(1) == Some('#') => {
                    // A line comment: to the end of the line, newline included.
                    while let Some(c) = self.peek() {
                        self.pos += 1;
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '#' if self.peek_at(1) == Some('*') => {
                    let start = self.pos;
                    self.pos += 2;
                    while self.pos < self.chars.len() && !self.starts_with("*#") {
                        self.pos += 1;
                    }
                    if self.pos >= self.chars.len() {
                        self.pos = start;
                        return Err(self.error("a #* comment without its *#"));
                    }
                    self.pos += 2;
                }
                '#' => {
                    let Some(word) = self.directive_word() else {
                        text.push('#');
                        self.pos += 1;
                        continue;
                    };
                    let alone = self.at_line_start();
                    let directive_start = self.pos;
                    let braced = self.peek_at(1) == Some('{');
                    self.pos += 1 + word.len() + if braced { 2 } else { 0 };
                    if ends.contains(&word.as_str()) {
                        let end = match word.as_str() {
                            "elseif" => Closing::ElseIf(self.condition()?),
                            "else" => Closing::Else,
                            _ => Closing::End,
                        };
                        self.gobble(&mut text, alone);
                        flush(&mut text, &mut nodes);
                        return Ok((nodes, end));
                    }
                    let node = match word.as_str() {
                        "set" => {
                            self.expect_open()?;
                            self.skip_space();
                            if self.peek() != Some('$') {
                                return Err(self.error("#set needs a reference: #set($name = value)"));
                            }
                            self.pos += 1;
                            let reference = self.reference()?;
                            self.skip_space();
                            if self.peek() != Some('=') {
                                return Err(self.error("#set needs '='"));
                            }
                            self.pos += 1;
                            let value = self.expr()?;
                            self.expect_close()?;
                            Node::Set(reference, value)
                        }
                        "if" => {
                            let condition = self.condition()?;
                            self.gobble(&mut text, alone);
                            flush(&mut text, &mut nodes);
                            let mut branches = Vec::new();
                            let mut otherwise = Vec::new();
                            let (body, mut end) = self.block(&["elseif", "else", "end"])?;
                            branches.push((condition, body));
                            loop {
                                match end {
                                    Closing::ElseIf(condition) => {
                                        let (body, next) = self.block(&["elseif", "else", "end"])?;
                                        branches.push((condition, body));
                                        end = next;
                                    }
                                    Closing::Else => {
                                        let (body, next) = self.block(&["end"])?;
                                        otherwise = body;
                                        end = next;
                                    }
                                    Closing::End => break,
                                    Closing::Input => {
                                        self.pos = directive_start;
                                        return Err(self.error("#if without its #end"));
                                    }
                                }
                            }
                            nodes.push(Node::If { branches, otherwise });
                            continue;
                        }
                        "foreach" => {
                            self.expect_open()?;
                            self.skip_space();
                            if self.peek() != Some('$') {
                                return Err(self.error("#foreach needs a variable: #foreach($item in $list)"));
                            }
                            self.pos += 1;
                            let variable = self
                                .identifier()
                                .ok_or_else(|| self.error("#foreach needs a variable name"))?;
                            self.skip_space();
                            if !self.starts_with("in") {
                                return Err(self.error("#foreach needs 'in'"));
                            }
                            self.pos += 2;
                            let items = self.expr()?;
                            self.expect_close()?;
                            self.gobble(&mut text, alone);
                            flush(&mut text, &mut nodes);
                            let (body, end) = self.block(&["end"])?;
                            if !matches!(end, Closing::End) {
                                self.pos = directive_start;
                                return Err(self.error("#foreach without its #end"));
                            }
                            nodes.push(Node::Foreach {
                                variable,
                                items,
                                body,
                            });
                            continue;
                        }
                        "break" => Node::Break,
                        "elseif" | "else" | "end" => {
                            self.pos = directive_start;
                            return Err(self.error(format!("#{word} without an opening #if or #foreach")));
                        }
                        other => {
                            self.pos = directive_start;
                            return Err(self.error(format!(
                                "#{other} is outside the Velocity subset Pylon runs (#set, #if/#elseif/#else, #foreach, #break)"
                            )));
                        }
                    };
                    self.gobble(&mut text, alone);
                    flush(&mut text, &mut nodes);
                    nodes.push(node);
                }
                '$' => {
                    let start = self.pos;
                    let quiet = self.peek_at(1) == Some('!');
                    let after = if quiet { 2 } else { 1 };
                    let braced = self.peek_at(after) == Some('{');
                    let first = self.peek_at(after + usize::from(braced));
                    if !first.is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
                        text.push('$');
                        self.pos += 1;
                        continue;
                    }
                    self.pos += after + usize::from(braced);
                    let reference = self.reference()?;
                    if braced {
                        if self.peek() != Some('}') {
                            return Err(self.error("${ without its }"));
                        }
                        self.pos += 1;
                    }
                    flush(&mut text, &mut nodes);
                    let source: String = self.chars[start..self.pos].iter().collect();
                    nodes.push(Node::Ref {
                        reference,
                        quiet,
                        source,
                    });
                }
                c => {
                    text.push(c);
                    self.pos += 1;
                }
            }
        }
        flush(&mut text, &mut nodes);
        Ok((nodes, Closing::Input))
    }

    /// The directive at `#` (`#set`, `#{else}`), if it is one.
    fn directive_word(&self) -> Option<String> {
        let braced = self.peek_at(1) == Some('{');
        let start = self.pos + 1 + usize::from(braced);
        let mut word = String::new();
        let mut i = start;
        while let Some(c) = self.chars.get(i).filter(|c| c.is_ascii_alphabetic()) {
            word.push(*c);
            i += 1;
        }
        if !DIRECTIVES.contains(&word.as_str()) {
            return None;
        }
        if braced && self.chars.get(i) != Some(&'}') {
            return None;
        }
        Some(word)
    }

    /// Whether only spaces or tabs stand between the line's start (or the
    /// template's) and the directive at the cursor.
    fn at_line_start(&self) -> bool {
        let mut i = self.pos;
        while i > 0 && matches!(self.chars[i - 1], ' ' | '\t') {
            i -= 1;
        }
        i == 0 || self.chars[i - 1] == '\n'
    }

    /// A directive alone on its line takes the line with it: its leading
    /// whitespace (at the end of `text`) and the rest of the line up to and
    /// with its newline, when nothing else is there.
    fn gobble(&mut self, text: &mut String, alone: bool) {
        if !alone {
            return;
        }
        let mut end = self.pos;
        while matches!(self.chars.get(end), Some(' ' | '\t')) {
            end += 1;
        }
        let next = match self.chars.get(end) {
            Some('\n') => end + 1,
            Some('\r') if self.chars.get(end + 1) == Some(&'\n') => end + 2,
            None => end,
            _ => return,
        };
        self.pos = next;
        let keep = text.trim_end_matches([' ', '\t']).len();
        text.truncate(keep);
    }

    fn condition(&mut self) -> Result<Expr, ParseError> {
        self.expect_open()?;
        let condition = self.expr()?;
        self.expect_close()?;
        Ok(condition)
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect_open(&mut self) -> Result<(), ParseError> {
        self.skip_space_inline();
        if self.peek() != Some('(') {
            return Err(self.error("a directive needs '('"));
        }
        self.pos += 1;
        Ok(())
    }

    fn skip_space_inline(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn expect_close(&mut self) -> Result<(), ParseError> {
        self.skip_space();
        if self.peek() != Some(')') {
            return Err(self.error("expected ')'"));
        }
        self.pos += 1;
        Ok(())
    }

    fn identifier(&mut self) -> Option<String> {
        let mut name = String::new();
        // Velocity identifiers may hold '-' (`$context.responseOverride.header.Content-Type`).
        while let Some(c) = self.peek().filter(|c| {
            c.is_ascii_alphanumeric()
                || *c == '_'
                || (*c == '-'
                    && !name.is_empty()
                    && self.peek_at(1).is_some_and(|n| n.is_ascii_alphanumeric()))
        }) {
            name.push(c);
            self.pos += 1;
        }
        (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit())).then_some(name)
    }

    /// After `$`: `name(.prop | .call(args) | [index])*`.
    fn reference(&mut self) -> Result<Reference, ParseError> {
        let root = self
            .identifier()
            .ok_or_else(|| self.error("a reference needs a name"))?;
        let mut path = Vec::new();
        loop {
            match self.peek() {
                Some('.')
                    if self
                        .peek_at(1)
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_') =>
                {
                    self.pos += 1;
                    let name = self
                        .identifier()
                        .ok_or_else(|| self.error("a property needs a name"))?;
                    if self.peek() == Some('(') {
                        self.pos += 1;
                        let args = self.arguments(')')?;
                        path.push(Access::Call(name, args));
                    } else {
                        path.push(Access::Property(name));
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    let index = self.expr()?;
                    self.skip_space();
                    if self.peek() != Some(']') {
                        return Err(self.error("expected ']'"));
                    }
                    self.pos += 1;
                    path.push(Access::Index(index));
                }
                _ => break,
            }
        }
        Ok(Reference { root, path })
    }

    /// Comma-separated expressions up to `close` (consumed).
    fn arguments(&mut self, close: char) -> Result<Vec<Expr>, ParseError> {
        let mut args = Vec::new();
        self.skip_space();
        if self.peek() == Some(close) {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            self.skip_space();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(args);
                }
                _ => return Err(self.error(format!("expected ',' or '{close}'"))),
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let result = self.binary(0);
        self.depth -= 1;
        result
    }

    fn operator(&mut self, level: usize) -> Option<Op> {
        self.skip_space();
        let words: &[(&str, Op)] = match level {
            0 => &[("||", Op::Or), ("or ", Op::Or)],
            1 => &[("&&", Op::And), ("and ", Op::And)],
            2 => &[("==", Op::Eq), ("!=", Op::Ne), ("eq ", Op::Eq), ("ne ", Op::Ne)],
            3 => &[
                ("<=", Op::Le),
                (">=", Op::Ge),
                ("<", Op::Lt),
                (">", Op::Gt),
                ("le ", Op::Le),
                ("ge ", Op::Ge),
                ("lt ", Op::Lt),
                ("gt ", Op::Gt),
            ],
            4 => &[("+", Op::Add), ("-", Op::Sub)],
            _ => &[("*", Op::Mul), ("/", Op::Div), ("%", Op::Mod)],
        };
        for (text, op) in words {
            if self.starts_with(text) {
                self.pos += text.len();
                return Some(*op);
            }
        }
        None
    }

    fn binary(&mut self, level: usize) -> Result<Expr, ParseError> {
        if level > 5 {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.operator(level) {
            let right = self.binary(level + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        if self.peek() == Some('!') {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.expr_unary()?)));
        }
        if self.starts_with("not ") {
            self.pos += 4;
            return Ok(Expr::Not(Box::new(self.expr_unary()?)));
        }
        if self.peek() == Some('-') && !self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
            return Ok(Expr::Negate(Box::new(self.expr_unary()?)));
        }
        self.primary()
    }

    /// A unary operand, counted as a level (`!!!!…x` nests).
    fn expr_unary(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let result = self.unary();
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_space();
        match self.peek() {
            Some('(') => {
                self.pos += 1;
                let inner = self.expr()?;
                self.expect_close()?;
                Ok(inner)
            }
            Some('$') => {
                self.pos += 1;
                if self.peek() == Some('!') {
                    self.pos += 1;
                }
                let braced = self.peek() == Some('{');
                if braced {
                    self.pos += 1;
                }
                let reference = self.reference()?;
                if braced {
                    if self.peek() != Some('}') {
                        return Err(self.error("${ without its }"));
                    }
                    self.pos += 1;
                }
                Ok(Expr::Ref(reference))
            }
            Some('\'') => {
                self.pos += 1;
                let mut text = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.error("a string without its closing '")),
                        Some('\'') if self.peek_at(1) == Some('\'') => {
                            text.push('\'');
                            self.pos += 2;
                        }
                        Some('\'') => {
                            self.pos += 1;
                            break;
                        }
                        Some(c) => {
                            text.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Expr::Literal(Value::String(text)))
            }
            Some('"') => {
                self.pos += 1;
                let start = self.pos;
                let mut end = start;
                while let Some(c) = self.chars.get(end) {
                    if *c == '"' {
                        if self.chars.get(end + 1) == Some(&'"') {
                            end += 2;
                            continue;
                        }
                        break;
                    }
                    end += 1;
                }
                if end >= self.chars.len() {
                    return Err(self.error("a string without its closing \""));
                }
                let inner: String = self.chars[start..end]
                    .iter()
                    .collect::<String>()
                    .replace("\"\"", "\"");
                self.pos = end + 1;
                let nodes = parse(&inner).map_err(|e| self.error(format!("in a string: {}", e.message)))?;
                Ok(Expr::Interpolated(nodes))
            }
            Some('[') => {
                self.pos += 1;
                self.skip_space();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Ok(Expr::List(Vec::new()));
                }
                let first = self.expr()?;
                self.skip_space();
                if self.starts_with("..") {
                    self.pos += 2;
                    let last = self.expr()?;
                    self.skip_space();
                    if self.peek() != Some(']') {
                        return Err(self.error("expected ']'"));
                    }
                    self.pos += 1;
                    return Ok(Expr::Range(Box::new(first), Box::new(last)));
                }
                let mut items = vec![first];
                loop {
                    self.skip_space();
                    match self.peek() {
                        Some(',') => {
                            self.pos += 1;
                            items.push(self.expr()?);
                        }
                        Some(']') => {
                            self.pos += 1;
                            return Ok(Expr::List(items));
                        }
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            Some('{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                self.skip_space();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    return Ok(Expr::Map(entries));
                }
                loop {
                    let key = self.expr()?;
                    self.skip_space();
                    if self.peek() != Some(':') {
                        return Err(self.error("expected ':' in a map"));
                    }
                    self.pos += 1;
                    let value = self.expr()?;
                    entries.push((key, value));
                    self.skip_space();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some('}') => {
                            self.pos += 1;
                            return Ok(Expr::Map(entries));
                        }
                        _ => return Err(self.error("expected ',' or '}' in a map")),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let start = self.pos;
                self.pos += 1;
                while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '.')
                    && !(self.peek() == Some('.') && self.peek_at(1) == Some('.'))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                let number = if text.contains('.') {
                    text.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                } else {
                    text.parse::<i64>().ok().map(Value::from)
                };
                number
                    .map(Expr::Literal)
                    .ok_or_else(|| self.error(format!("{text:?} is not a number")))
            }
            _ if self.starts_with("true") => {
                self.pos += 4;
                Ok(Expr::Literal(Value::Bool(true)))
            }
            _ if self.starts_with("false") => {
                self.pos += 5;
                Ok(Expr::Literal(Value::Bool(false)))
            }
            _ if self.starts_with("null") => {
                self.pos += 4;
                Ok(Expr::Literal(Value::Null))
            }
            _ => Err(self.error("expected a value")),
        }
    }
}

fn flush(text: &mut String, nodes: &mut Vec<Node>) {
    if !text.is_empty() {
        nodes.push(Node::Text(std::mem::take(text)));
    }
}
