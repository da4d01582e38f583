//! The `http` sink: POSTs each event as JSON to the user's service with an `Idempotency-Key`.
//! 2xx is done; 408, 429, 5xx and connection errors mean the service is not working (waited
//! out); any other 4xx means the service rejects this event (retried, then dead-lettered).
//! Redirects are not followed: a client following a 301/302/303 re-sends a POST as a GET without
//! its body, and a 2xx on that GET would count an event as written that never arrived. A 3xx is
//! the service's misconfiguration, waited out like an outage.

use std::time::Duration;

use reqwest::StatusCode;
use wapipe_core::redact::{redact_url, redact_urls};

use crate::error::{Error, Result};
use crate::route::Event;

use super::Sink;

const SINK: &str = "http";

pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    /// The URL as logs and failure reasons show it: a token in its query string or a
    /// password in it never leaves the process (see [`wapipe_core::redact`]).
    shown: String,
}

impl HttpSink {
    pub fn new(url: &str, timeout: Duration) -> Result<HttpSink> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("wapipe-worker")
            .build()
            .map_err(Error::BuildHttpClient)?;
        Ok(HttpSink {
            client,
            url: url.to_string(),
            shown: redact_url(url),
        })
    }
}

/// Whether an HTTP status means the service is unavailable rather than refusing the event.
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

impl HttpSink {
    /// POSTs one event.
    async fn post(&self, event: &Event) -> Result<()> {
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &event.id)
            .json(event)
            .send()
            .await
            .map_err(|e| Error::SinkUnavailable {
                sink: SINK,
                reason: format!(
                    "{}: {}",
                    self.shown,
                    redact_urls(&e.without_url().to_string())
                ),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| redact_urls(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_else(|| "(none)".into());
            tracing::warn!(
                url = %self.shown,
                %status,
                %location,
                "the http sink answered a redirect; redirects are not followed (the POST would \
                 lose its body): point --http-sink-url at the final URL"
            );
            Err(Error::SinkUnavailable {
                sink: SINK,
                reason: format!(
                    "{} answered {status} with Location {location}; redirects are not followed",
                    self.shown
                ),
            })
        } else if is_transient(status) || !status.is_client_error() {
            Err(Error::SinkUnavailable {
                sink: SINK,
                reason: format!("{} answered {status}", self.shown),
            })
        } else {
            let body = response.text().await.unwrap_or_default();
            Err(Error::SinkRejected {
                sink: SINK,
                reason: format!("{status}: {}", body.chars().take(200).collect::<String>()),
            })
        }
    }
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        SINK
    }

    async fn write_batch(&self, events: &[Event]) -> Result<()> {
        for event in events {
            self.post(event).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_throttling_and_server_errors_are_transient_other_client_errors_are_not() {
        assert!(is_transient(StatusCode::REQUEST_TIMEOUT));
        assert!(is_transient(StatusCode::TOO_MANY_REQUESTS));
        assert!(is_transient(StatusCode::BAD_GATEWAY));
        assert!(!is_transient(StatusCode::BAD_REQUEST));
        assert!(!is_transient(StatusCode::UNPROCESSABLE_ENTITY));
    }

    #[tokio::test]
    async fn a_failure_reason_never_carries_the_urls_token_or_password() {
        use crate::route::{meta_record, route};
        let value = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "w",
            "changes": [{"field": "messages", "value": {"messages": [
                {"id": "wamid.1", "from": "1555", "type": "text", "text": {"body": "hi"}}]}}]}]});
        let event = route(&meta_record("1555", &value)).unwrap();
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let sink = HttpSink::new(
            "http://bob:pa55word@127.0.0.1:9/wa?token=s3cr3t",
            Duration::from_secs(2),
        )
        .unwrap();
        let Err(Error::SinkUnavailable { reason, .. }) = sink.write(&event).await else {
            panic!("an unreachable service is unavailable");
        };
        assert!(
            !reason.contains("s3cr3t") && !reason.contains("pa55word"),
            "{reason}"
        );
        assert!(
            reason.contains("http://REDACTED@127.0.0.1:9/wa?token=REDACTED"),
            "{reason}"
        );
    }
}
