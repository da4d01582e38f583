//! The `http` sink: POSTs each event as JSON to the user's service with an `Idempotency-Key`.
//! 2xx is done; 408, 429, 5xx and connection errors mean the service is not working (waited
//! out); any other 4xx means the service rejects this event (retried, then dead-lettered).
//! Redirects are not followed: a client following a 301/302/303 re-sends a POST as a GET without
//! its body, and a 2xx on that GET would count an event as written that never arrived. A 3xx is
//! the service's misconfiguration, waited out like an outage.

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
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("wapipe-worker")
            .build()
            .map_err(Error::BuildHttpClient)?;
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
        } else if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_else(|| "(none)".into());
            tracing::warn!(
                url = %self.url,
                %status,
                %location,
                "the http sink answered a redirect; redirects are not followed (the POST would \
                 lose its body): point --http-sink-url at the final URL"
            );
            Err(Error::SinkUnavailable {
                sink: SINK,
                reason: format!(
                    "{} answered {status} with Location {location}; redirects are not followed",
                    self.url
                ),
            })
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
