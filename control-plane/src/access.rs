//! Who may call what: named credentials with a role each, checked for
//! every call on both ports by one layer ([`Access`]) before any handler
//! runs.
//!
//! - **operator**: the admin API, reads and writes; **reader**: the admin
//!   API's reads (`Get*`, `List*`) only;
//! - **data-plane**: the config stream (`pylon.publish.v1.ConfigPublisher`)
//!   only;
//! - **peer**: the Raft port only.
//!
//! Server reflection needs an operator or reader unless the node opened it;
//! health is always open. A credential that is valid but whose role does
//! not allow the call gets `PERMISSION_DENIED`; a missing or unknown one
//! `UNAUTHENTICATED`. Every presented token is compared with every
//! configured one in constant time (no early exit). The legacy single
//! token (`--token-file`, `PYLON_ADMIN_TOKEN`) holds every role.
//!
//! With mutual TLS (`--tls-client-ca`), a client certificate chaining to
//! that CA names its caller by its URI SAN `spiffe://TRUST_DOMAIN/ROLE/NAME`
//! (trust domain `pylon` unless `--tls-client-trust-domain` says otherwise):
//! no bearer secret is needed. A presented bearer token wins over the
//! certificate.
//!
//! Credentials come from a YAML file (`--credentials-file`), reloaded on
//! SIGHUP (a file that no longer parses keeps the previous set, loudly):
//!
//! ```yaml
//! - {name: alice, role: operator, token_file: /etc/pylon/alice.token}
//! - {name: ci, role: reader, token_env: PYLON_CI_TOKEN}
//! - {name: dp-eu, role: data-plane, token_file: /etc/pylon/dp-eu.token}
//! - {name: cp, role: peer, token_file: /etc/pylon/peer.token}
//! ```

use crate::auth::BearerToken;
use arc_swap::ArcSwap;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a credential is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Operator,
    Reader,
    DataPlane,
    Peer,
}

impl Role {
    fn bit(self) -> u8 {
        match self {
            Role::Operator => 1,
            Role::Reader => 2,
            Role::DataPlane => 4,
            Role::Peer => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Reader => "reader",
            Role::DataPlane => "data-plane",
            Role::Peer => "peer",
        }
    }
}

/// The caller a request's credential names; put in the request's
/// extensions for the handlers.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: Arc<str>,
    roles: u8,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles & role.bit() != 0
    }

    /// The roles the credential holds, in a fixed order.
    pub fn roles(&self) -> Vec<Role> {
        [Role::Operator, Role::Reader, Role::DataPlane, Role::Peer]
            .into_iter()
            .filter(|role| self.has(*role))
            .collect()
    }
}

/// The method a call names (`Method` of `/package.Service/Method`), put in
/// the request's extensions by [`Access`] for the audit log.
#[derive(Clone, Debug)]
pub struct CalledMethod(pub Arc<str>);

struct Credential {
    name: Arc<str>,
    roles: u8,
    token: BearerToken,
}

/// The configured credentials (empty: the node checks nothing, which it
/// allows only on loopback).
#[derive(Default)]
pub struct Credentials {
    entries: Vec<Credential>,
}

/// A credentials file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("--credentials-file {}: cannot read", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--credentials-file {}: cannot parse", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("--credentials-file {}: lists no credentials (an empty file would open the node to anyone)", path.display())]
    Empty { path: PathBuf },
    #[error("--credentials-file {}: [{index}].{field}: {why}", path.display())]
    Invalid {
        path: PathBuf,
        index: usize,
        field: &'static str,
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    role: Role,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
}

impl Credentials {
    /// The legacy single token, holding every role, named `token`.
    pub fn single(token: Option<BearerToken>) -> Credentials {
        Credentials {
            entries: token
                .into_iter()
                .map(|token| Credential {
                    name: "--token-file".into(),
                    roles: 0b1111,
                    token,
                })
                .collect(),
        }
    }

    /// Reads `path` (see the module docs), plus the legacy `token` if set.
    ///
    /// # Errors
    /// The file cannot be read or parsed, an entry has no token (or two
    /// sources), a token file is missing or empty, two entries share a name.
    pub fn load(path: &Path, token: Option<BearerToken>) -> Result<Credentials, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let entries: Vec<Entry> =
            serde_norway::from_str(&text).map_err(|source| CredentialsError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if entries.is_empty() {
            return Err(CredentialsError::Empty {
                path: path.to_owned(),
            });
        }
        let mut credentials = Credentials::single(token);
        for (index, entry) in entries.into_iter().enumerate() {
            let invalid = |field: &'static str, why: String| CredentialsError::Invalid {
                path: path.to_owned(),
                index,
                field,
                why,
            };
            let valid_name = !entry.name.is_empty()
                && entry.name.len() <= 128
                && entry
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
            if !valid_name {
                return Err(invalid(
                    "name",
                    format!(
                        "{:?}: 1-128 characters of A-Z a-z 0-9 - _ . @ (certificate identities and the names system and anonymous are kept apart)",
                        entry.name
                    ),
                ));
            }
            if ["system", "anonymous", "--token-file"]
                .iter()
                .any(|reserved| reserved.eq_ignore_ascii_case(&entry.name))
            {
                return Err(invalid("name", format!("{:?} is reserved", entry.name)));
            }
            if credentials.entries.iter().any(|c| *c.name == *entry.name) {
                return Err(invalid("name", format!("{:?} is used twice", entry.name)));
            }
            let text = match (&entry.token_file, &entry.token_env) {
                (Some(file), None) => std::fs::read_to_string(file)
                    .map_err(|e| invalid("token_file", format!("{}: {e}", file.display())))?,
                (None, Some(var)) => {
                    std::env::var(var).map_err(|_| invalid("token_env", format!("{var} is not set")))?
                }
                _ => {
                    return Err(invalid(
                        "token_file",
                        "set exactly one of token_file and token_env".into(),
                    ));
                }
            };
            let field = if entry.token_file.is_some() {
                "token_file"
            } else {
                "token_env"
            };
            let trimmed = text.trim();
            // A token travels in a header: visible ASCII only, and short
            // enough for any proxy's header limits.
            if trimmed.is_empty()
                || trimmed.len() > MAX_TOKEN
                || !trimmed.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(invalid(
                    field,
                    format!("the token must be 1 to {MAX_TOKEN} visible ASCII characters"),
                ));
            }
            let token =
                BearerToken::new(trimmed).ok_or_else(|| invalid(field, "the token is empty".into()))?;
            // One token, one credential: otherwise the role it holds would
            // depend on the order of the file.
            if let Some(other) = credentials.entries.iter().find(|c| c.token.same_secret(&token)) {
                return Err(invalid(
                    field,
                    format!(
                        "the same token as credential {:?}; every credential needs its own",
                        other.name
                    ),
                ));
            }
            credentials.entries.push(Credential {
                name: entry.name.into(),
                roles: entry.role.bit(),
                token,
            });
        }
        Ok(credentials)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller whose token was presented, comparing it with every
    /// credential (constant time each, no early exit).
    pub fn identify(&self, presented: &str) -> Option<Caller> {
        let digest = BearerToken::digest_of(presented);
        let mut found = None;
        for credential in &self.entries {
            if credential.token.matches_digest(&digest) && found.is_none() {
                found = Some(Caller {
                    name: credential.name.clone(),
                    roles: credential.roles,
                });
            }
        }
        found
    }

    /// The caller of the credential named `name` while its token is still
    /// the one whose SHA-256 is `digest` (a console session names its
    /// credential this way, so removing or rotating the credential ends
    /// the session).
    pub fn caller_by_digest(&self, name: &str, digest: &[u8; 32]) -> Option<Caller> {
        self.entries
            .iter()
            .find(|c| &*c.name == name && c.token.matches_digest(digest))
            .map(|c| Caller {
                name: c.name.clone(),
                roles: c.roles,
            })
    }

    /// The token this node presents in `role` (the first such credential).
    pub fn token_for(&self, role: Role) -> Option<BearerToken> {
        self.entries
            .iter()
            .find(|c| c.roles & role.bit() != 0)
            .map(|c| c.token.clone())
    }
}

/// The longest token accepted, bytes.
pub const MAX_TOKEN: usize = 4096;

/// The credentials a node serves with, swapped whole on reload.
pub type SharedCredentials = Arc<ArcSwap<Credentials>>;

/// Which port a layer guards.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    /// The admin port: admin API, config stream, reflection, health.
    Admin { open_reflection: bool },
    /// The Raft port.
    Peer,
}

/// What a call on `port` to `path` (`/package.Service/Method`) needs: `None`
/// for open calls, else the roles any of which allows it.
fn required(port: Port, path: &str) -> Option<&'static [Role]> {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match port {
        Port::Peer => Some(&[Role::Peer]),
        Port::Admin { open_reflection } => match service {
            "grpc.health.v1.Health" => None,
            s if s.starts_with("grpc.reflection.") => {
                (!open_reflection).then_some(&[Role::Operator, Role::Reader][..])
            }
            "pylon.publish.v1.ConfigPublisher" => Some(&[Role::DataPlane]),
            "pylon.admin.v1.AdminService" if method.starts_with("Get") || method.starts_with("List") => {
                Some(&[Role::Operator, Role::Reader])
            }
            _ => Some(&[Role::Operator]),
        },
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme in
/// any case, RFC 9110 §11.1).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What a call presents to show who makes it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The `authorization` header's value.
    pub authorization: Option<&'a str>,
    /// The client certificate (DER) of a mutual-TLS connection: the TLS
    /// layer has already checked that it chains to `--tls-client-ca`.
    pub certificate: Option<&'a [u8]>,
}

/// The caller a client certificate names: its URI SAN
/// `spiffe://TRUST_DOMAIN/ROLE/NAME` (ROLE one of `operator`, `reader`,
/// `data-plane`, `peer`; NAME 1–128 characters of `A-Z a-z 0-9 - _ . :`).
/// The caller's name is the whole URI, which is what the audit log shows.
///
/// # Errors
/// Why the certificate names no caller, for the `UNAUTHENTICATED` status.
pub fn certificate_caller(der: &[u8], trust_domain: &str) -> Result<Caller, String> {
    use x509_parser::extensions::GeneralName;
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let prefix = format!("spiffe://{trust_domain}/");
    let uris: Vec<&str> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    // An X.509-SVID holds exactly one URI SAN (SPIFFE X.509-SVID §2): a
    // certificate naming several could be read as any of them.
    let uri = match uris.as_slice() {
        [uri] if uri.starts_with(&prefix) => *uri,
        [] | [_] => {
            return Err(format!(
                "the certificate names no role: expected one URI SAN {prefix}ROLE/NAME"
            ));
        }
        _ => {
            return Err(format!(
                "the certificate has {} URI SANs: a SPIFFE identity has exactly one",
                uris.len()
            ));
        }
    };
    let (role, name) = uri[prefix.len()..]
        .split_once('/')
        .ok_or_else(|| format!("{uri}: expected {prefix}ROLE/NAME"))?;
    let role = match role {
        "operator" => Role::Operator,
        "reader" => Role::Reader,
        "data-plane" => Role::DataPlane,
        "peer" => Role::Peer,
        other => {
            return Err(format!(
                "{uri}: unknown role {other:?} (operator, reader, data-plane, peer)"
            ));
        }
    };
    let valid_name = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !valid_name {
        return Err(format!(
            "{uri}: the name must be 1-128 characters of A-Z a-z 0-9 - _ . :"
        ));
    }
    Ok(Caller {
        name: Arc::from(uri),
        roles: role.bit(),
    })
}

/// Decides one call: the caller, or the status that refuses it. A bearer
/// token, when presented, decides; otherwise the client certificate does
/// (when `trust_domain` is set: mutual TLS is on).
///
/// # Errors
/// `UNAUTHENTICATED` without a known token or certificate identity,
/// `PERMISSION_DENIED` when the caller's role does not allow the call.
pub fn authorize(
    credentials: &Credentials,
    trust_domain: Option<&str>,
    port: Port,
    path: &str,
    presented: Presented<'_>,
) -> Result<Option<Caller>, tonic::Status> {
    if credentials.is_empty() && trust_domain.is_none() {
        return Ok(None);
    }
    let Some(roles) = required(port, path) else {
        return Ok(None);
    };
    let caller = match (presented.authorization, presented.certificate, trust_domain) {
        (Some(authorization), _, _) => {
            let Some(token) = bearer(authorization) else {
                return Err(tonic::Status::unauthenticated(
                    "malformed authorization: expected `Bearer <token>`",
                ));
            };
            credentials
                .identify(token)
                .ok_or_else(|| tonic::Status::unauthenticated("invalid bearer token"))?
        }
        (None, Some(der), Some(trust_domain)) => {
            certificate_caller(der, trust_domain).map_err(tonic::Status::unauthenticated)?
        }
        (None, _, _) => {
            let expected = if trust_domain.is_some() {
                "missing `authorization: Bearer <token>` or a client certificate"
            } else {
                "missing `authorization: Bearer <token>`"
            };
            return Err(tonic::Status::unauthenticated(expected));
        }
    };
    allowed(&caller, roles, path)?;
    Ok(Some(caller))
}

fn allowed(caller: &Caller, roles: &[Role], path: &str) -> Result<(), tonic::Status> {
    if roles.iter().any(|role| caller.has(*role)) {
        Ok(())
    } else {
        let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(tonic::Status::permission_denied(format!(
            "credential {:?} may not call {path} (needs {})",
            caller.name,
            allowed.join(" or ")
        )))
    }
}

/// Whether an identified `caller` may call `path` on the admin port: the
/// same rule [`authorize`] applies, for calls made in process (the
/// operator console).
///
/// # Errors
/// `PERMISSION_DENIED` naming the credential and the roles that may.
pub fn check_admin_call(caller: &Caller, path: &str) -> Result<(), tonic::Status> {
    match required(
        Port::Admin {
            open_reflection: false,
        },
        path,
    ) {
        Some(roles) => allowed(caller, roles, path),
        None => Ok(()),
    }
}

/// The tower layer that guards a port (see the module docs).
#[derive(Clone)]
pub struct Access<S> {
    pub inner: S,
    pub credentials: SharedCredentials,
    pub port: Port,
    /// Set with mutual TLS: client certificates name callers in this
    /// SPIFFE trust domain.
    pub trust_domain: Option<Arc<str>>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Access<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().rsplit('/').next().unwrap_or("").to_owned();
        request.extensions_mut().insert(CalledMethod(method.into()));
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let certificates = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs());
        let presented = Presented {
            authorization,
            certificate: certificates.as_ref().and_then(|c| c.first()).map(|c| c.as_ref()),
        };
        let decided = authorize(
            &self.credentials.load(),
            self.trust_domain.as_deref(),
            self.port,
            request.uri().path(),
            presented,
        );
        match decided {
            Ok(caller) => {
                if let Some(caller) = caller {
                    request.extensions_mut().insert(caller);
                }
                Box::pin(self.inner.call(request))
            }
            Err(status) => Box::pin(futures::future::ready(Ok(status.into_http()))),
        }
    }
}

/// Reloads `path` into `credentials` on every SIGHUP, keeping the legacy
/// `token`; a file that fails keeps the previous set. Without a file the
/// signal is logged and ignored (the node keeps running; the legacy token
/// and `token_env` values are read at start only).
pub fn reload_on_sighup(path: Option<PathBuf>, token: Option<BearerToken>, credentials: SharedCredentials) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::info!("SIGHUP: no --credentials-file to reload; nothing changes");
                continue;
            };
            match Credentials::load(path, token.clone()) {
                Ok(loaded) => {
                    let count = loaded.entries.len();
                    credentials.store(Arc::new(loaded));
                    tracing::info!(credentials = count, path = %path.display(), "credentials reloaded");
                }
                Err(e) => tracing::error!(
                    error = %pylon_common::error::error_chain(&e),
                    "credentials not reloaded; keeping the previous ones"
                ),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        let entry = |name: &str, role: Role, token: &str| Credential {
            name: name.into(),
            roles: role.bit(),
            token: BearerToken::new(token).unwrap_or_else(|| unreachable!()),
        };
        Credentials {
            entries: vec![
                entry("alice", Role::Operator, "op"),
                entry("ci", Role::Reader, "ro"),
                entry("dp", Role::DataPlane, "dp"),
                entry("cp", Role::Peer, "peer"),
            ],
        }
    }

    fn code(port: Port, path: &str, token: &str) -> tonic::Code {
        let header = format!("Bearer {token}");
        let presented = Presented {
            authorization: Some(&header),
            certificate: None,
        };
        match authorize(&credentials(), None, port, path, presented) {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    }

    #[test]
    fn each_role_reaches_only_its_calls() {
        use tonic::Code::{Ok, PermissionDenied, Unauthenticated};
        let admin = Port::Admin {
            open_reflection: false,
        };
        let write = "/pylon.admin.v1.AdminService/DeleteUsagePlan";
        let read = "/pylon.admin.v1.AdminService/ListApis";
        let stream = "/pylon.publish.v1.ConfigPublisher/Subscribe";
        let raft = "/pylon.raft.v1.RaftTransport/Send";
        let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let table = [
            ("op", [Ok, Ok, PermissionDenied, PermissionDenied, Ok]),
            (
                "ro",
                [PermissionDenied, Ok, PermissionDenied, PermissionDenied, Ok],
            ),
            (
                "dp",
                [
                    PermissionDenied,
                    PermissionDenied,
                    Ok,
                    PermissionDenied,
                    PermissionDenied,
                ],
            ),
            (
                "peer",
                [
                    PermissionDenied,
                    PermissionDenied,
                    PermissionDenied,
                    Ok,
                    PermissionDenied,
                ],
            ),
            ("nobody", [Unauthenticated; 5]),
        ];
        for (token, expected) in table {
            let got = [
                code(admin, write, token),
                code(admin, read, token),
                code(admin, stream, token),
                code(Port::Peer, raft, token),
                code(admin, reflection, token),
            ];
            assert_eq!(got, expected, "token {token}");
        }
        assert_eq!(code(admin, "/grpc.health.v1.Health/Check", "nobody"), Ok);
        let open = Port::Admin {
            open_reflection: true,
        };
        assert_eq!(code(open, reflection, "nobody"), Ok);
        assert!(
            authorize(&Credentials::default(), None, admin, write, Presented::default()).is_ok(),
            "no credentials: open"
        );
    }

    #[test]
    fn a_credentials_file_that_could_open_the_node_or_confuse_roles_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            path
        };
        let (a, b) = (file("a.token", "same\n"), file("b.token", "same"));
        let odd = file("odd.token", "p\u{e4}ssw\u{f6}rt");
        let cases = [
            ("", "lists no credentials"),
            ("[]", "lists no credentials"),
            (
                &format!(
                    "- {{name: x, role: reader, token_file: {}}}\n- {{name: y, role: operator, token_file: {}}}",
                    a.display(),
                    b.display()
                ),
                "[1].token_file: the same token as credential \"x\"",
            ),
            (
                &format!("- {{name: x, role: reader, token_file: {}}}", odd.display()),
                "[0].token_file: the token must be 1 to 4096 visible ASCII characters",
            ),
            (
                &format!(
                    "- {{name: x, role: reader, token_file: {}, token_env: HOME}}",
                    a.display()
                ),
                "set exactly one of token_file and token_env",
            ),
            (
                &format!(
                    "- {{name: \"spiffe://pylon/operator/alice\", role: reader, token_file: {}}}",
                    a.display()
                ),
                "1-128 characters",
            ),
            (
                &format!("- {{name: system, role: operator, token_file: {}}}", a.display()),
                "reserved",
            ),
        ];
        for (text, expected) in cases {
            let path = file("credentials.yaml", text);
            let error = Credentials::load(&path, None)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(
                error.as_ref().is_err_and(|e| e.contains(expected)),
                "{text:?}: {error:?}"
            );
        }
        let legacy = BearerToken::new("same");
        let path = file(
            "credentials.yaml",
            &format!("- {{name: x, role: reader, token_file: {}}}", a.display()),
        );
        assert!(
            Credentials::load(&path, legacy).is_err(),
            "the legacy token is one credential too"
        );
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_not() {
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
