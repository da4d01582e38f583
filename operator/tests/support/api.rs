//! The mocked API server the operator's mock tests talk to (kube-rs `ApiServerVerifier`
//! pattern): each test answers the requests it expects, in order. Events are answered and
//! recorded on the side, since the recorder may POST or PATCH them.
#![allow(dead_code)] // not every test file uses every helper

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

/// A client whose requests go to the returned server, with `namespace` as its default.
pub fn pair(namespace: &str) -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (
        Client::new(service, namespace),
        ApiServer {
            handle,
            events: Vec::new(),
        },
    )
}

pub type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// The mocked API server's side of one scenario.
pub struct ApiServer {
    pub handle: ApiHandle,
    pub events: Vec<String>,
}

/// One request as the server saw it.
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub body: Value,
}

impl ApiServer {
    /// Answers the next non-event request with `respond(request body)`.
    pub async fn expect(
        &mut self,
        method: &str,
        path: &str,
        respond: impl FnOnce(&Value) -> Value,
    ) -> Seen {
        self.expect_status(method, path, 200, respond).await
    }

    /// Like [`ApiServer::expect`], answering with `status`.
    pub async fn expect_status(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        respond: impl FnOnce(&Value) -> Value,
    ) -> Seen {
        loop {
            let (request, send) =
                tokio::time::timeout(Duration::from_secs(10), self.handle.next_request())
                    .await
                    .unwrap_or_else(|_| panic!("no request arrived; expected {method} {path}"))
                    .unwrap_or_else(|| panic!("client gone; expected {method} {path}"));
            let method_seen = request.method().to_string();
            let uri = request.uri().to_string();
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            if uri.contains("/events") {
                if let Some(reason) = body.get("reason").and_then(Value::as_str) {
                    self.events.push(reason.to_string());
                }
                send.send_response(
                    Response::builder()
                        .status(201)
                        .body(Body::from(bytes.to_vec()))
                        .unwrap(),
                );
                continue;
            }
            assert_eq!(
                method_seen, method,
                "unexpected request {method_seen} {uri}"
            );
            assert!(uri.starts_with(path), "expected {method} {path}, got {uri}");
            let answer = respond(&body);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
            return Seen {
                method: method_seen,
                uri,
                body,
            };
        }
    }

    /// Checks that an Event with `reason` was recorded.
    #[track_caller]
    pub fn assert_event(&self, reason: &str) {
        assert!(
            self.events.iter().any(|seen| seen == reason),
            "no {reason} Event among {:?}",
            self.events
        );
    }

    /// Answers any events still queued, then checks no other request comes.
    pub async fn finish(&mut self) {
        while let Ok(Some((request, send))) =
            tokio::time::timeout(Duration::from_millis(200), self.handle.next_request()).await
        {
            let uri = request.uri().to_string();
            assert!(
                uri.contains("/events"),
                "unexpected extra request {} {uri}",
                request.method()
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            if let Some(reason) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|b| b.get("reason").and_then(Value::as_str).map(String::from))
            {
                self.events.push(reason);
            }
            send.send_response(
                Response::builder()
                    .status(201)
                    .body(Body::from(bytes.to_vec()))
                    .unwrap(),
            );
        }
    }
}

pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": "NotFound", "code": 404, "message": "not found"})
}
