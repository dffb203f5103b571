//! A minimal client for the gateway's own calls to the upstream (not proxied traffic): the
//! start-up introspection query that builds the schema map. It reuses Pingora's connector, so
//! TLS, SNI and timeouts behave exactly as for proxied requests.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;

use crate::config::{Credential, Upstream};
use crate::permissions::schema::{SchemaMap, INTROSPECTION_QUERY};

/// POSTs a JSON body to the upstream's GraphQL endpoint; returns status and body.
pub async fn post_json(upstream: &Upstream, body: Bytes) -> Result<(u16, Bytes), String> {
    let connector = Connector::new(None);
    let exchange = async {
        let (mut session, _) = connector
            .get_http_session(&upstream.peer)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut req = RequestHeader::build("POST", upstream.path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        let set = |req: &mut RequestHeader, k: &'static str, v: &str| {
            req.insert_header(k, v).map_err(|e| e.to_string())
        };
        req.insert_header("host", upstream.host_header.clone())
            .map_err(|e| e.to_string())?;
        set(&mut req, "content-type", "application/json")?;
        set(&mut req, "content-length", &body.len().to_string())?;
        if let Credential::Replace(token) = &upstream.credential {
            req.insert_header("authorization", token.clone())
                .map_err(|e| e.to_string())?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| format!("write: {e}"))?;
        session
            .write_request_body(body.clone(), true)
            .await
            .map_err(|e| format!("write: {e}"))?;
        session
            .finish_request_body()
            .await
            .map_err(|e| format!("write: {e}"))?;
        session
            .read_response_header()
            .await
            .map_err(|e| format!("read: {e}"))?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        let mut out = Vec::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| format!("read: {e}"))?
        {
            out.extend_from_slice(&chunk);
        }
        Ok::<_, String>((status, Bytes::from(out)))
    };
    tokio::time::timeout(upstream.timeouts.total, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", upstream.timeouts.total))?
}

/// Builds the schema map by introspecting the upstream (blocking; used before the server runs).
pub fn introspect(upstream: &Upstream) -> Result<SchemaMap, String> {
    let body = Bytes::from(serde_json::json!({ "query": INTROSPECTION_QUERY }).to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, body) = rt.block_on(post_json(upstream, body))?;
    if status != 200 {
        return Err(format!("introspection answered HTTP {status}"));
    }
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("introspection answer is not JSON: {e}"))?;
    if let Some(errors) = value.get("errors") {
        return Err(format!("introspection failed: {errors}"));
    }
    let data = value
        .get("data")
        .ok_or("introspection answer has no data")?;
    SchemaMap::from_introspection(data)
}
