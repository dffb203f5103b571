//! TLS termination: HTTP/2 and HTTP/1.1 over TLS by ALPN, cleartext HTTP/1.1 beside it, and a
//! certificate replaced on disk is served to new connections without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure report

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn client(ca_pem: &[u8], http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .tls_built_in_root_certs(false);
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test]
async fn tls_with_h2_by_alpn_and_a_certificate_swapped_on_disk_without_restart() {
    let origin = MockOrigin::start().await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "first");
    let tls_port = free_port();
    let gw = GatewayBuilder::new(&origin)
        .poll("200ms")
        .extra(&format!("\n[[listener]]\naddress = \"127.0.0.1:{tls_port}\"\ntls = {{ cert_file = \"{cert}\", key_file = \"{key}\" }}\n"))
        .start()
        .await;
    let url = format!("https://localhost:{tls_port}/cdn");
    let body = json!({ "query": "{ posts { id } }" }).to_string();
    let first_pem = std::fs::read(&cert).unwrap();

    let resp = client(&first_pem, false)
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let resp = client(&first_pem, true)
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        (resp.status().as_u16(), resp.version()),
        (200, reqwest::Version::HTTP_11)
    );
    // Cleartext HTTP/1.1 on the other listener still works.
    assert_eq!(
        gw.query("/cdn", None, "{ posts { id } }").await.status(),
        200
    );

    // Rotate: a new pair written over the old files (write aside, rename over).
    let (new_cert, new_key) = self_signed(certs.path(), "second");
    let second_pem = std::fs::read(&new_cert).unwrap();
    assert!(
        client(&second_pem, true)
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .is_err(),
        "the new certificate is not served yet"
    );
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client per attempt: a new connection and handshake.
        match client(&second_pem, true)
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the new certificate was never served: {other:?}\n{}",
                    gw.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(gw.log().contains("TLS certificate reloaded"));
}
