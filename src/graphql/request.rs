//! GraphQL-over-HTTP: from a POST JSON body or GET query parameters to one request.
//!
//! The body is parsed strictly — a key repeated at any depth is refused, since which copy a
//! CMS uses (first or last) is not the gateway's to guess — and only what was parsed and
//! checked goes upstream: [`GraphqlRequest::to_json_body`] and
//! [`GraphqlRequest::to_query_string`] re-serialize it. `extensions` is accepted (object or
//! null) but never forwarded: nothing the gateway did not check may change what the CMS does.
//!
//! Well-formed JSON that is not a GraphQL request (`{"qeury": …}`, `"variables": [7]`) is a
//! 400 `BAD_REQUEST`, not a 422: the gateway never gets as far as validating the document
//! against a schema, so every request-shape error is a client syntax error to it.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::GraphqlError;

#[derive(Debug, Clone, PartialEq)]
pub struct GraphqlRequest {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Map<String, Value>,
}

/// Most JSON values (of any kind, at any depth) one request may carry: what its parse can
/// build is about this many `Value`s (~56 bytes each with their containers, ~15 MB) whatever
/// the body's size, checked as it parses (a 2 MiB body of `[[],[],…]` would otherwise build
/// ~700 000).
pub const MAX_JSON_VALUES: usize = 262_144;

/// JSON into a `Value`, refusing a repeated object key at any depth (serde_json's own `Value`
/// keeps the last copy silently) and more than [`MAX_JSON_VALUES`] values. serde_json's
/// recursion limit (128) still applies.
struct Strict<'a>(&'a std::cell::Cell<usize>);

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let left = self.0.get();
        if left == 0 {
            return Err(de::Error::custom(format!(
                "more than {MAX_JSON_VALUES} JSON values"
            )));
        }
        self.0.set(left - 1);
        d.deserialize_any(StrictVisitor(self.0))
    }
}

struct StrictVisitor<'a>(&'a std::cell::Cell<usize>);

impl<'de> Visitor<'de> for StrictVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("key {k:?} is repeated")));
            }
            let v = map.next_value_seed(Strict(self.0))?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses JSON text strictly (no repeated keys, at most [`MAX_JSON_VALUES`] values, nothing
/// after the value).
pub fn strict_json(text: &[u8]) -> Result<Value, serde_json::Error> {
    let budget = std::cell::Cell::new(MAX_JSON_VALUES);
    let mut d = serde_json::Deserializer::from_slice(text);
    let v = Strict(&budget).deserialize(&mut d)?;
    d.end()?;
    Ok(v)
}

impl GraphqlRequest {
    /// Parses a POST body (`application/json`).
    pub fn from_json(body: &[u8]) -> Result<Self, GraphqlError> {
        let value = strict_json(body).map_err(|e| GraphqlError::BodyNotJson(e.to_string()))?;
        let mut obj = match value {
            Value::Object(o) => o,
            Value::Array(_) => return Err(GraphqlError::Batch),
            _ => return Err(GraphqlError::NotAnObject),
        };
        let query = match obj.remove("query") {
            Some(Value::String(q)) => q,
            Some(Value::Null) | None => {
                return Err(GraphqlError::MissingQuery(
                    "persisted queries are not supported",
                ))
            }
            Some(_) => {
                return Err(GraphqlError::WrongType {
                    field: "query",
                    expected: "a string",
                })
            }
        };
        let operation_name = match obj.remove("operationName") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(GraphqlError::WrongType {
                    field: "operationName",
                    expected: "a string or null",
                })
            }
        };
        let variables = match obj.remove("variables") {
            Some(Value::Object(m)) => m,
            Some(Value::Null) | None => Map::new(),
            Some(_) => {
                return Err(GraphqlError::WrongType {
                    field: "variables",
                    expected: "an object or null",
                })
            }
        };
        match obj.remove("extensions") {
            Some(Value::Null | Value::Object(_)) | None => {}
            Some(_) => {
                return Err(GraphqlError::WrongType {
                    field: "extensions",
                    expected: "an object or null",
                })
            }
        }
        Ok(Self {
            query,
            operation_name,
            variables,
        })
    }

    /// The POST body the gateway forwards: exactly what it parsed, checked and keyed, as JSON
    /// (UTF-8, no repeated keys, no `extensions`, nothing the client added).
    pub fn to_json_body(&self) -> bytes::Bytes {
        let mut body = Map::new();
        body.insert("query".into(), Value::String(self.query.clone()));
        if let Some(name) = &self.operation_name {
            body.insert("operationName".into(), Value::String(name.clone()));
        }
        if !self.variables.is_empty() {
            body.insert("variables".into(), Value::Object(self.variables.clone()));
        }
        serde_json::to_vec(&Value::Object(body))
            .map(bytes::Bytes::from)
            .unwrap_or_default()
    }

    /// The GET parameters the gateway forwards: only what it parsed, checked and keyed (query,
    /// operationName, variables), re-encoded. Anything else in the client's query string
    /// (unknown parameters, `extensions`, a second spelling of the same text) stays at the edge,
    /// so no unkeyed input can shape an answer that is then cached for everyone.
    pub fn to_query_string(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.append_pair("query", &self.query);
        if let Some(name) = &self.operation_name {
            s.append_pair("operationName", name);
        }
        if !self.variables.is_empty() {
            s.append_pair(
                "variables",
                &Value::Object(self.variables.clone()).to_string(),
            );
        }
        s.finish()
    }

    /// Parses GET parameters (`?query=…&variables=…&operationName=…`). Repeated parameters are
    /// refused: which copy wins would differ between the gateway and the CMS.
    pub fn from_query_string(qs: &str) -> Result<Self, GraphqlError> {
        let mut query = None;
        let mut operation_name = None;
        let mut variables = None;
        let mut extensions = None;
        for (k, v) in url::form_urlencoded::parse(qs.as_bytes()) {
            let slot = match k.as_ref() {
                "query" => &mut query,
                "operationName" => &mut operation_name,
                "variables" => &mut variables,
                "extensions" => &mut extensions,
                _ => continue,
            };
            if slot.is_some() {
                return Err(GraphqlError::BadQueryString(format!(
                    "parameter {k:?} is repeated"
                )));
            }
            *slot = Some(v.into_owned());
        }
        let query = query.ok_or(GraphqlError::MissingQuery("no query parameter"))?;
        let variables = match variables.as_deref() {
            None | Some("") => Map::new(),
            Some(v) => match strict_json(v.as_bytes()) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => Map::new(),
                Ok(_) => {
                    return Err(GraphqlError::WrongType {
                        field: "variables",
                        expected: "a JSON object",
                    })
                }
                Err(e) => {
                    return Err(GraphqlError::BadQueryString(format!(
                        "variables is not JSON: {e}"
                    )))
                }
            },
        };
        match extensions.as_deref() {
            None | Some("") => {}
            Some(v) => match strict_json(v.as_bytes()) {
                Ok(Value::Object(_)) => {}
                _ => {
                    return Err(GraphqlError::WrongType {
                        field: "extensions",
                        expected: "a JSON object",
                    })
                }
            },
        }
        Ok(Self {
            query,
            operation_name: operation_name.filter(|s| !s.is_empty()),
            variables,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_get_parameters_parse_back_to_what_was_checked() {
        let r = GraphqlRequest::from_query_string(
            "query=query+Q(%24s%3A+String)+%7B+posts(where%3A+%7Btitle%3A+%24s%7D)+%7B+id+%7D+%7D\
             &operationName=Q&variables=%7B%22s%22%3A%22a%26b%3Dc+%F0%9F%8F%83%22%7D\
             &extensions=%7B%7D&callback=evil",
        )
        .unwrap();
        let forwarded = r.to_query_string();
        assert!(!forwarded.contains("callback") && !forwarded.contains("extensions"));
        let again = GraphqlRequest::from_query_string(&forwarded).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn post_shapes() {
        let r = GraphqlRequest::from_json(
            br#"{"query":"{ posts { id } }","variables":{"a":1},"operationName":null}"#,
        )
        .unwrap();
        assert_eq!(r.query, "{ posts { id } }");
        assert_eq!(r.variables.get("a"), Some(&Value::from(1)));
        assert_eq!(GraphqlRequest::from_json(b"[{}]"), Err(GraphqlError::Batch));
        assert!(matches!(
            GraphqlRequest::from_json(br#"{"qeury":"{a}"}"#),
            Err(GraphqlError::MissingQuery(_))
        ));
        assert!(matches!(
            GraphqlRequest::from_json(br#"{"query":"{a}","variables":[7]}"#),
            Err(GraphqlError::WrongType {
                field: "variables",
                ..
            })
        ));
        assert!(matches!(
            GraphqlRequest::from_json(b"{nope"),
            Err(GraphqlError::BodyNotJson(_))
        ));
        assert_eq!(
            GraphqlRequest::from_json(b"\"q\""),
            Err(GraphqlError::NotAnObject)
        );
    }

    #[test]
    fn a_body_of_many_small_values_is_refused_before_it_is_built() {
        let many = format!("[{}[]]", "[],".repeat(MAX_JSON_VALUES));
        let e = strict_json(many.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("more than 262144 JSON values"), "{e}");
        let fits = format!("[{}[]]", "[],".repeat(MAX_JSON_VALUES - 2));
        assert!(strict_json(fits.as_bytes()).is_ok());
    }

    #[test]
    fn repeated_keys_are_refused_at_any_depth_and_the_body_is_re_serialized() {
        for body in [
            &br#"{"query":"{ posts { id } }","query":"mutation { deletePost }"}"#[..],
            br#"{"query":"{a}","variables":{"x":1,"x":2}}"#,
            br#"{"query":"{a}","variables":{"x":{"y":1,"y":2}}}"#,
            br#"{"query":"{a}"} {"query":"{b}"}"#,
        ] {
            assert!(
                matches!(
                    GraphqlRequest::from_json(body),
                    Err(GraphqlError::BodyNotJson(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let r = GraphqlRequest::from_json(
            br#"{"extensions":{"persistedQuery":{}},"variables":{"b":[1,"1"],"a":null},"query":"{a}","operationName":null}"#,
        )
        .unwrap();
        let body = r.to_json_body();
        assert_eq!(
            &body[..],
            br#"{"query":"{a}","variables":{"a":null,"b":[1,"1"]}}"#
        );
        assert_eq!(GraphqlRequest::from_json(&body).unwrap(), r);
    }

    #[test]
    fn get_shapes() {
        let r = GraphqlRequest::from_query_string(
            "query=%7B%20posts%20%7B%20id%20%7D%20%7D&variables=%7B%22x%22%3A1%7D",
        )
        .unwrap();
        assert_eq!(r.query, "{ posts { id } }");
        assert_eq!(r.variables.get("x"), Some(&Value::from(1)));
        assert!(GraphqlRequest::from_query_string("query=a&query=b").is_err());
        assert!(GraphqlRequest::from_query_string("variables=%7B%7D").is_err());
    }
}
