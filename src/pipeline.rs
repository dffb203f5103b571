//! The decision for one request, independent of Pingora: authenticate, parse, check the
//! request shape and limits, decide the stage. Returns what to forward or why to refuse.
//!
//! Kept free of I/O so the same code path is exercised by the proxy, the unit tests and the
//! benches. The proxy reads the body (bounded) and hands it in; nothing here touches the
//! upstream, so every refusal is guaranteed to leave the origin untouched.

use http::Method;

use crate::auth::{self, AuthError, Principal};
use crate::config::{EndpointKind, Limits};
use std::sync::Arc;

use crate::graphql::document::{self, Operation, OperationKind, ParseLimits};
use crate::graphql::parsed::{self, DocumentCache, Parsed};
use crate::graphql::request::GraphqlRequest;
use crate::graphql::GraphqlError;
use crate::permissions::authorize::{authorize, AuthzError, Denial, OperationContext};
use crate::permissions::management;
use crate::policy::Snapshot;
use crate::schema::SchemaMap;
use crate::stage::{EffectiveStage, Locale, Stage};

/// What the proxy knows about the request when it decides.
pub struct Incoming<'a> {
    pub method: &'a Method,
    pub endpoint: EndpointKind,
    pub authorization: Vec<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
    pub stage_header: Vec<&'a [u8]>,
    pub locales_header: Vec<&'a [u8]>,
    pub query_string: Option<&'a str>,
    /// The whole body for POST; `None` for GET.
    pub body: Option<&'a [u8]>,
}

/// A request that may go upstream.
#[derive(Debug)]
pub struct Admitted {
    pub principal: Principal,
    /// The parsed request and document, shared with every identical request.
    pub parsed: Arc<Parsed>,
    pub stage: EffectiveStage,
    /// Locales from the `gcms-locales` header, in the client's order.
    pub header_locales: Option<Vec<Locale>>,
}

impl Admitted {
    pub fn operation(&self) -> &Operation {
        &self.parsed.document.operation
    }
}

/// The cached analysis, or a fresh one (stored only once admitted: see `decide`).
fn get_or_parse(
    cache: &DocumentCache,
    key: &[u8; 32],
    input: &Incoming,
    schema: Option<&SchemaMap>,
    limits: &Limits,
) -> Result<(Arc<Parsed>, bool), GraphqlError> {
    if let Some(hit) = cache.get(key) {
        return Ok((hit, true));
    }
    let request = match input.body {
        Some(body) => GraphqlRequest::from_json(body)?,
        None => GraphqlRequest::from_query_string(input.query_string.unwrap_or(""))?,
    };
    let document = document::parse_document(&request, parse_limits(limits), schema)?;
    Ok((
        Arc::new(Parsed::new(request, document, input.body.is_some())),
        false,
    ))
}

/// The document limits of `[limits]`.
pub fn parse_limits(l: &Limits) -> ParseLimits {
    ParseLimits {
        recursion: l.max_depth,
        tokens: l.max_query_tokens,
        expanded_fields: l.max_expanded_fields,
        aliases: l.max_aliases,
        root_fields: l.max_root_fields,
        input_nodes: l.max_input_nodes,
    }
}

/// Who was refused, for the audit log: the token's name and jti, never the token.
#[derive(Debug, Clone, Default)]
pub struct Who {
    pub name: String,
    pub jti: Option<String>,
}

impl Who {
    fn of(p: &Principal) -> Self {
        Self {
            name: p.name().to_string(),
            jti: p.jti().map(str::to_string),
        }
    }
}

/// Why a request is refused. `proxy::respond` holds the one table from here to HTTP.
#[derive(Debug)]
pub enum Rejection {
    NotFound,
    Auth(AuthError),
    Graphql(GraphqlError),
    /// A content permission is missing.
    Forbidden {
        denial: Box<Denial>,
        who: Who,
    },
    /// A management root field the principal may not run (`permission`: `None` if the field is
    /// not in the table).
    ManagementForbidden {
        field: String,
        permission: Option<&'static str>,
        who: Who,
    },
    /// No schema map: content requests cannot be authorized, so none is forwarded.
    NoSchema,
    /// A rate limit (scope: token, ip, origin) is exhausted.
    RateLimited {
        retry_after: u64,
        scope: &'static str,
    },
    /// The client address is outside the endpoint's allow list or inside its deny list.
    AddressDenied,
    /// A CORS preflight for an origin or method the endpoint does not allow.
    CorsDenied,
    /// The request header block is over `limits.max_header_bytes`.
    HeadersTooLarge,
    /// The request target is over `limits.max_uri_bytes`.
    UriTooLong,
    /// Ambiguous framing or target (RFC 9112): both Transfer-Encoding and Content-Length, a
    /// missing or repeated Host, an Upgrade on a request with a body.
    BadFraming(&'static str),
    /// A replica of a cluster that cannot confirm it holds the current policy (revocations!)
    /// refuses token requests until it can.
    PolicyStale,
    /// The process already buffers `limits.max_buffered_body_bytes` of request bodies.
    BodyBudget,
}

impl Rejection {
    /// Whether the caller's request is what failed: a limit, a replica that cannot confirm its
    /// policy and a missing schema map are the gateway's state, and do not spend the caller's
    /// refusal budget.
    pub fn caused_by_caller(&self) -> bool {
        !matches!(
            self,
            Rejection::RateLimited { .. }
                | Rejection::PolicyStale
                | Rejection::NoSchema
                | Rejection::BodyBudget
        )
    }

    /// A limit of `scope` (token, ip, origin, refused) is exhausted for `wait`.
    pub fn rate_limited(wait: std::time::Duration, scope: &'static str) -> Self {
        Rejection::RateLimited {
            retry_after: crate::ratelimit::retry_after_secs(wait),
            scope,
        }
    }
}

impl From<AuthError> for Rejection {
    fn from(e: AuthError) -> Self {
        Self::Auth(e)
    }
}

impl From<GraphqlError> for Rejection {
    fn from(e: GraphqlError) -> Self {
        Self::Graphql(e)
    }
}

/// Whether a `Content-Type` is JSON in UTF-8: `application/json` (any case), with no
/// parameter or only `charset=utf-8` (quoted or not, any case). Any other charset or parameter
/// would make the CMS read bytes the gateway did not (`charset=utf-7`); the forwarded body is
/// the gateway's own UTF-8 re-serialization with its own content type anyway. The
/// GraphQL-over-HTTP `application/graphql-response+json` is a response type, not accepted here.
pub fn is_json(content_type: &[u8]) -> bool {
    let mut parts = content_type.split(|b| *b == b';');
    let media = parts.next().unwrap_or_default();
    if !media.trim_ascii().eq_ignore_ascii_case(b"application/json") {
        return false;
    }
    parts.all(|p| {
        let p = p.trim_ascii();
        let Some(eq) = p.iter().position(|b| *b == b'=') else {
            return false;
        };
        let (name, value) = (p[..eq].trim_ascii(), p[eq + 1..].trim_ascii());
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        name.eq_ignore_ascii_case(b"charset") && value.eq_ignore_ascii_case(b"utf-8")
    })
}

/// Authenticates and decides, with no rate limit (tools, benches, fuzzing).
pub fn decide(input: &Incoming, snap: &Snapshot, limits: &Limits) -> Result<Admitted, Rejection> {
    decide_limited(input, snap, limits, |_| Ok(()))
}

/// Authenticates and decides. The method and content type are checked before the token so a
/// CSRF-style form post never costs a signature verification; `limit` is asked as soon as the
/// principal is known, before the document is parsed or cached, so a rate-limited caller costs
/// no parse and leaves nothing in the document cache.
pub fn decide_limited(
    input: &Incoming,
    snap: &Snapshot,
    limits: &Limits,
    limit: impl FnOnce(&Principal) -> Result<(), Rejection>,
) -> Result<Admitted, Rejection> {
    let principal = authenticate(input, snap)?;
    limit(&principal)?;
    decide_authenticated(input, snap, limits, principal)
}

/// The first half of [`decide_limited`]: method, content type, then the credentials. A caller
/// whose limits are asked asynchronously (the cluster's, in Redis) asks them between the halves.
pub fn authenticate(input: &Incoming, snap: &Snapshot) -> Result<Principal, Rejection> {
    match (input.method, input.body) {
        (m, Some(_)) if m == Method::POST => {
            if !input.content_type.is_some_and(is_json) {
                return Err(GraphqlError::UnsupportedMediaType.into());
            }
        }
        (m, None) if m == Method::GET => {}
        (m, _) => return Err(GraphqlError::MethodNotAllowed(m.to_string()).into()),
    }
    Ok(auth::authenticate(
        &input.authorization,
        &snap.registry,
        &snap.verifier,
    )?)
}

/// The second half of [`decide_limited`]: parse, stage, authorize, for a known principal.
pub fn decide_authenticated(
    input: &Incoming,
    snap: &Snapshot,
    limits: &Limits,
    principal: Principal,
) -> Result<Admitted, Rejection> {
    let schema = match input.endpoint {
        EndpointKind::Management => None,
        _ => snap.schema.as_deref(),
    };
    let key = parsed::key(
        input.endpoint as u8,
        input.method == Method::POST,
        input
            .body
            .unwrap_or(input.query_string.unwrap_or("").as_bytes()),
    );
    let (parsed, cached) = get_or_parse(&snap.documents, &key, input, schema, limits)?;
    let document = &parsed.document;
    let operation = &document.operation;
    if operation.kind == OperationKind::Mutation {
        if input.method == Method::GET {
            return Err(GraphqlError::MutationOverGet.into());
        }
        if input.endpoint == EndpointKind::Cdn {
            return Err(GraphqlError::MutationOnCdn.into());
        }
    }
    let header_stage = single_header(&input.stage_header, "gcms-stage")?
        .map(|s| known_stage(snap, s, "gcms-stage header"))
        .transpose()?;
    let header_locales = single_header(&input.locales_header, "gcms-locales")?
        .map(|v| {
            v.split(',')
                .map(|l| known_locale(snap, l.trim_matches([' ', '\t']), "gcms-locales header"))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let stage_of = |op: &Operation| -> Result<EffectiveStage, Rejection> {
        let mut arguments = Vec::with_capacity(op.root_fields.len());
        for f in &op.root_fields {
            arguments.push(
                f.stage
                    .as_deref()
                    .map(|s| known_stage(snap, s, "stage argument"))
                    .transpose()?,
            );
            for l in f.locales.iter().flatten() {
                known_locale(snap, l, "locales argument")?;
            }
        }
        Ok(EffectiveStage::decide(
            &arguments,
            header_stage.clone(),
            &principal.policy().default_stage,
        ))
    };
    let stage = stage_of(operation)?;
    match (input.endpoint, schema) {
        (EndpointKind::Management, _) => {
            let granted = match &principal {
                Principal::Token(t) => t.management.as_slice(),
                Principal::Public(_) => &[],
            };
            for op in std::iter::once(operation).chain(&document.others) {
                let nested = op
                    .root_fields
                    .iter()
                    .flat_map(|f| f.nested.iter().map(String::as_str));
                if let Err((field, permission)) =
                    management::check(op.root_fields.iter().map(|f| f.name.as_str()), granted)
                        .and_then(|()| management::check_nested(nested, granted))
                {
                    return Err(Rejection::ManagementForbidden {
                        field,
                        permission,
                        who: Who::of(&principal),
                    });
                }
            }
        }
        (_, Some(schema)) => {
            // Every operation of the document is authorized, not only the selected one.
            let mut ops = vec![(operation, stage.clone())];
            for other in &document.others {
                ops.push((other, stage_of(other)?));
            }
            for (op, op_stage) in ops {
                let ctx = OperationContext {
                    stage: &op_stage,
                    header_locales: header_locales.as_deref(),
                };
                authorize(op, &ctx, principal.policy(), &snap.cms, schema).map_err(
                    |e| match e {
                        AuthzError::Invalid(g) => Rejection::Graphql(g),
                        AuthzError::Denied(denial) => Rejection::Forbidden {
                            denial: Box::new(denial),
                            who: Who::of(&principal),
                        },
                    },
                )?;
            }
        }
        (_, None) => return Err(Rejection::NoSchema),
    }
    if !cached {
        snap.documents.admit(key, &parsed);
    }
    Ok(Admitted {
        principal,
        parsed,
        stage,
        header_locales,
    })
}

/// One header value as text; a repeated header is ambiguous and refused. Only visible ASCII,
/// spaces and tabs are accepted, and only ASCII spaces and tabs are trimmed: a value the gateway
/// reads differently from the CMS (`de` followed by U+00A0) must not pass as `de`. The checked
/// value, never the client's bytes, is what goes upstream.
fn single_header<'a>(
    values: &[&'a [u8]],
    name: &'static str,
) -> Result<Option<&'a str>, GraphqlError> {
    match values {
        [] => Ok(None),
        [one] if one.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') => {
            // Visible ASCII: valid UTF-8.
            Ok(std::str::from_utf8(one)
                .ok()
                .map(|s| s.trim_matches([' ', '\t'])))
        }
        [_] => Err(GraphqlError::Argument {
            what: name,
            message: "must be plain ASCII".into(),
        }),
        _ => Err(GraphqlError::Argument {
            what: name,
            message: "header is repeated".into(),
        }),
    }
}

fn known_stage(snap: &Snapshot, name: &str, what: &'static str) -> Result<Stage, GraphqlError> {
    snap.cms
        .stage(name)
        .cloned()
        .ok_or_else(|| GraphqlError::Argument {
            what,
            message: format!("unknown stage {name:?}"),
        })
}

fn known_locale(snap: &Snapshot, name: &str, what: &'static str) -> Result<Locale, GraphqlError> {
    snap.cms
        .locale(name)
        .cloned()
        .ok_or_else(|| GraphqlError::Argument {
            what,
            message: format!("unknown locale {name:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile::{compile, Inputs};

    /// A snapshot compiled from a real policies folder (`policy::fixture`).
    fn snapshot(public: &str) -> (tempfile::TempDir, Snapshot) {
        let (dir, config) = crate::policy::fixture::folder(public, "", "");
        let snap = compile(&Inputs::read(&config).unwrap(), 1, None, None).unwrap();
        (dir, snap)
    }

    const PUBLIC: &str = "default_stage = \"PUBLISHED\"\n[[permission]]\naction = \"read\"\nstages = [\"PUBLISHED\"]\n";

    fn post<'a>(
        body: &'a [u8],
        endpoint: EndpointKind,
        headers: (&'a [u8], &'a [u8]),
    ) -> Incoming<'a> {
        let (stage, locales) = headers;
        Incoming {
            method: &Method::POST,
            endpoint,
            authorization: Vec::new(),
            content_type: Some(b"application/json"),
            stage_header: if stage.is_empty() {
                vec![]
            } else {
                vec![stage]
            },
            locales_header: if locales.is_empty() {
                vec![]
            } else {
                vec![locales]
            },
            query_string: None,
            body: Some(body),
        }
    }

    fn limits() -> Limits {
        crate::config::Config::parse(
            std::path::Path::new("gateway.toml"),
            "[[listener]]\naddress = \"127.0.0.1:1\"\n[upstream.cms]\nurl = \"http://127.0.0.1:9/graphql\"\n[[endpoint]]\npath = \"/cdn\"\nkind = \"cdn\"\n",
        )
        .unwrap()
        .limits
    }

    fn verdict(r: Result<Admitted, Rejection>) -> &'static str {
        match r {
            Ok(_) => "admitted",
            Err(Rejection::Graphql(e)) => e.code(),
            Err(Rejection::Forbidden { .. }) => "FORBIDDEN",
            Err(Rejection::Auth(e)) => e.reason(),
            Err(Rejection::RateLimited { .. }) => "RATE_LIMITED",
            Err(_) => "other",
        }
    }

    #[test]
    fn decide_table() {
        let (_dir, snap) = snapshot(PUBLIC);
        let limits = limits();
        let q = |s: &str| serde_json::json!({ "query": s }).to_string().into_bytes();
        let read = q("{ posts { title } }");
        let draft = q("{ posts(stage: DRAFT) { title } }");
        let mutation = q("mutation { deletePost(where: {id: \"p\"}) { id } }");
        let dup = br#"{"query":"{ posts { title } }","query":"{ authors { name } }"}"#;
        let none: (&[u8], &[u8]) = (b"", b"");
        let cases: Vec<(Incoming, &str)> = vec![
            (post(&read, EndpointKind::Content, none), "admitted"),
            (post(&draft, EndpointKind::Content, none), "FORBIDDEN"),
            (
                post(&read, EndpointKind::Content, (b"DRAFT", b"")),
                "FORBIDDEN",
            ),
            (
                post(&read, EndpointKind::Content, (b"LIVE", b"")),
                "BAD_USER_INPUT",
            ),
            (
                post(&read, EndpointKind::Content, (b"", "de\u{a0}".as_bytes())),
                "BAD_USER_INPUT",
            ),
            (
                post(&mutation, EndpointKind::Cdn, none),
                "METHOD_NOT_ALLOWED",
            ),
            (post(dup, EndpointKind::Content, none), "BAD_REQUEST"),
            (
                Incoming {
                    content_type: Some(b"application/json; charset=utf-7"),
                    ..post(&read, EndpointKind::Content, none)
                },
                "UNSUPPORTED_MEDIA_TYPE",
            ),
        ];
        for (input, want) in cases {
            let body = String::from_utf8_lossy(input.body.unwrap_or_default()).to_string();
            assert_eq!(verdict(decide(&input, &snap, &limits)), want, "{body}");
        }
    }

    #[test]
    fn only_admitted_requests_enter_the_document_cache() {
        let (_dir, snap) = snapshot(PUBLIC);
        let limits = limits();
        let denied = serde_json::json!({ "query": "{ posts(stage: DRAFT) { title } }" })
            .to_string()
            .into_bytes();
        let none: (&[u8], &[u8]) = (b"", b"");
        assert!(decide(&post(&denied, EndpointKind::Cdn, none), &snap, &limits).is_err());
        assert_eq!(snap.documents.weighted_size(), 0);
        let allowed = serde_json::json!({ "query": "{ posts { title } }" })
            .to_string()
            .into_bytes();
        let a = decide(&post(&allowed, EndpointKind::Cdn, none), &snap, &limits).unwrap();
        assert!(snap.documents.weighted_size() > 0);
        // The forwarded body is the re-serialization, and the checked context is the principal's.
        assert_eq!(&a.parsed.forward[..], br#"{"query":"{ posts { title } }"}"#);
        assert_eq!(a.stage.fallback.as_str(), "PUBLISHED");
    }

    #[test]
    fn a_rate_limited_caller_is_refused_before_its_document_is_parsed() {
        let (_dir, snap) = snapshot(PUBLIC);
        let limits = limits();
        let none: (&[u8], &[u8]) = (b"", b"");
        let limited = |_: &Principal| {
            Err(Rejection::RateLimited {
                retry_after: 1,
                scope: "ip",
            })
        };
        // Not even parsed: a document that would not parse is refused for the limit.
        let broken = br#"{"query": "{ posts { "}"#.to_vec();
        let input = post(&broken, EndpointKind::Cdn, none);
        assert_eq!(
            verdict(decide_limited(&input, &snap, &limits, limited)),
            "RATE_LIMITED"
        );
        assert_eq!(
            verdict(decide(&input, &snap, &limits)),
            "GRAPHQL_PARSE_FAILED"
        );
        // Nor kept: an allowed document of a limited caller leaves the document cache empty.
        let allowed = serde_json::json!({ "query": "{ posts { title } }" })
            .to_string()
            .into_bytes();
        let input = post(&allowed, EndpointKind::Cdn, none);
        assert!(decide_limited(&input, &snap, &limits, limited).is_err());
        assert_eq!(snap.documents.weighted_size(), 0);
    }
}
