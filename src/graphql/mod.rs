//! GraphQL-over-HTTP request parsing and the document facts the gateway decides on.
//!
//! [`request`] turns a POST JSON body or GET parameters into a [`request::GraphqlRequest`];
//! [`document`] parses the query with apollo-parser (recursion and token limits set) and selects
//! the operation, giving its type and its root fields with the `stage:`/`locales:` arguments
//! resolved through variables and variable defaults.

pub mod args;
pub mod cost;
pub mod document;
pub mod parsed;
pub mod reads;
pub mod request;

use apollo_parser::cst;
use thiserror::Error;

/// The name of a fragment spread.
pub fn fragment_name(s: &cst::FragmentSpread) -> String {
    s.fragment_name()
        .and_then(|n| n.name())
        .map(|n| n.text().to_string())
        .unwrap_or_default()
}

/// Why a GraphQL request was refused before anything else looked at it. Each variant has a
/// stable `code()` (error body and metric label) and maps to one status in `proxy::respond`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GraphqlError {
    #[error("request body is not valid JSON: {0}")]
    BodyNotJson(String),
    #[error("request body must be a JSON object with a \"query\" string")]
    NotAnObject,
    #[error("batched requests (a JSON array) are not supported; send one operation per request")]
    Batch,
    #[error("missing \"query\": {0}")]
    MissingQuery(&'static str),
    #[error("\"{field}\" must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("GET parameters are not valid: {0}")]
    BadQueryString(String),
    #[error("content type must be application/json for POST")]
    UnsupportedMediaType,
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error("a GET request must not have a body")]
    GetWithBody,
    #[error("method {0} is not allowed; use GET or POST")]
    MethodNotAllowed(String),
    #[error("syntax error: {message} (at byte {index})")]
    Syntax { message: String, index: usize },
    #[error("document exceeds the {what} limit of {limit}")]
    Limit { what: &'static str, limit: usize },
    #[error("{0}")]
    Operation(OperationError),
    #[error("subscriptions are not supported")]
    Subscription,
    #[error("mutations must be sent with POST")]
    MutationOverGet,
    #[error("mutations are not allowed on the cdn endpoint; use the content endpoint")]
    MutationOnCdn,
    #[error("invalid {what}: {message}")]
    Argument { what: &'static str, message: String },
}

/// What is wrong with a document's operations, fragments or names (400 `BAD_OPERATION`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OperationError {
    #[error("fragment {0:?} is defined more than once")]
    DuplicateFragment(String),
    #[error("a request document may contain only operations and fragments, found {0}")]
    NotExecutable(String),
    #[error("several operations are named {0:?}")]
    AmbiguousName(String),
    #[error("no operation named {0:?} in the document")]
    UnknownOperation(String),
    #[error("the document contains no operation")]
    NoOperation,
    #[error("the document contains several operations; operationName is required")]
    NameRequired,
    #[error("fragment {0:?} spreads itself (cycle)")]
    FragmentCycle(String),
    #[error("unknown fragment {0:?}")]
    UnknownFragment(String),
    #[error("variable ${0} is defined more than once")]
    DuplicateVariable(String),
    #[error("argument {0:?} is given more than once")]
    DuplicateArgument(String),
    #[error("input field {0:?} is given more than once")]
    DuplicateInputField(String),
}

impl From<OperationError> for GraphqlError {
    fn from(e: OperationError) -> Self {
        Self::Operation(e)
    }
}

impl GraphqlError {
    /// The nesting of a document, counted across fragment spreads, is over `max_depth`.
    pub fn too_deep(limit: usize) -> Self {
        Self::Limit {
            what: "depth",
            limit,
        }
    }

    /// An argument value nests deeper than [`args::MAX_VALUE_DEPTH`].
    pub fn value_too_deep() -> Self {
        Self::Limit {
            what: "value depth",
            limit: args::MAX_VALUE_DEPTH,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BodyNotJson(_)
            | Self::NotAnObject
            | Self::MissingQuery(_)
            | Self::WrongType { .. }
            | Self::BadQueryString(_) => "BAD_REQUEST",
            Self::Batch => "BATCH_NOT_SUPPORTED",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::BodyTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::BodyTimeout(_) => "REQUEST_TIMEOUT",
            Self::GetWithBody => "BAD_REQUEST",
            Self::MethodNotAllowed(_) | Self::MutationOverGet | Self::MutationOnCdn => {
                "METHOD_NOT_ALLOWED"
            }
            Self::Syntax { .. } => "GRAPHQL_PARSE_FAILED",
            Self::Limit { .. } => "LIMIT_EXCEEDED",
            Self::Operation(_) | Self::Subscription => "BAD_OPERATION",
            Self::Argument { .. } => "BAD_USER_INPUT",
        }
    }

    /// The closed set of rejection reasons used as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Syntax { .. } => "parse",
            Self::Limit { .. } | Self::BodyTooLarge { .. } | Self::BodyTimeout(_) => "limit",
            Self::MethodNotAllowed(_)
            | Self::MutationOverGet
            | Self::MutationOnCdn
            | Self::GetWithBody => "method",
            Self::UnsupportedMediaType => "content_type",
            _ => "request",
        }
    }
}
