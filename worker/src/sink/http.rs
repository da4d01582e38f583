//! The `http` sink: POSTs each event as JSON to the user's service with an `Idempotency-Key`.
//! 2xx is done; 408, 429, 5xx and connection errors mean the service is not working (waited
//! out); any other 4xx means the service rejects this event (retried, then dead-lettered).

use std::time::Duration;

use reqwest::StatusCode;

use crate::error::{Error, Result};
use crate::route::Event;

use super::Sink;

const SINK: &str = "http";

pub struct HttpSink {
    client: reqwest::Client,
    url: String,
}

impl HttpSink {
    pub fn new(url: &str, timeout: Duration) -> Result<HttpSink> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent("wapipe-worker")
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(HttpSink {
            client,
            url: url.to_string(),
        })
    }
}

/// Whether an HTTP status means the service is unavailable rather than refusing the event.
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

#[async_trait::async_trait]
impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        SINK
    }

    async fn write(&self, event: &Event) -> Result<()> {
        let response = self
            .client
            .post(&self.url)
            .header("Idempotency-Key", &event.id)
            .json(event)
            .send()
            .await
            .map_err(|e| Error::SinkUnavailable {
                sink: SINK,
                reason: e.to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if is_transient(status) || !status.is_client_error() {
            Err(Error::SinkUnavailable {
                sink: SINK,
                reason: format!("{} answered {status}", self.url),
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
}
