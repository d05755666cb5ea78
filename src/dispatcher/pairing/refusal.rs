//! Why the pairing listener refuses a request, and the one place that maps
//! a refusal to the wire (HTTP status, JSON `reason`) and to the log
//! (`pair-reject REASON=<token>`).
//!
//! Three audiences, three spellings:
//!
//! - the agent reads the JSON `reason` and prints it (the Perl agent prints
//!   it verbatim), so where the original controller had a refusal its text
//!   is kept (`pairing queue full`, `request too large`, `invalid request`,
//!   `invalid hostname`);
//! - operators alert on the log token (`queue-full`, `body-too-large`, as
//!   the original's LOGGING.md names them), so every token is a fixed
//!   kebab-case word, never free text;
//! - HTTP clients and proxies read the status. The original answered every
//!   refusal with 200; the body is the same, only the status line changed,
//!   and both agents ignore it.
//!
//! | refusal            | status | JSON `reason`                                  | log token           |
//! |--------------------|--------|------------------------------------------------|---------------------|
//! | malformed request  | 400    | `invalid request`                              | `invalid-request`   |
//! | bad JSON or fields | 400    | `invalid request`                              | `invalid-request`   |
//! | bad hostname       | 400    | `invalid hostname`                             | `invalid-hostname`  |
//! | body over 64 KiB   | 413    | `request too large`                            | `body-too-large`    |
//! | head over limits   | 431    | `request headers too large`                    | `headers-too-large` |
//! | IP's share used up | 429    | `too many pending requests from this address`  | `queue-share`       |
//! | queue full         | 503    | `pairing queue full`                           | `queue-full`        |
//! | queue not writable | 500    | `pairing queue unavailable`                    | `queue-write-failed`|

use std::io;

use crate::net::http::HttpError;

/// A refused pairing request.
#[derive(Debug)]
pub enum Refusal {
    /// The HTTP framing, the JSON or a required field is wrong.
    InvalidRequest,
    /// `hostname` cannot be a registry key.
    InvalidHostname,
    /// The body is over the pairing body limit.
    BodyTooLarge,
    /// Too many header lines, or the head is over its byte limit.
    HeadersTooLarge,
    /// The source IP already holds its share of the queue.
    QueueShare {
        /// Requests that IP has pending.
        pending: usize,
        /// The share allowed per IP.
        share: usize,
    },
    /// The queue holds `pairing_max_queue` requests.
    QueueFull {
        /// The configured cap.
        max: usize,
    },
    /// The request could not be written to the queue directory.
    Store(io::Error),
}

impl Refusal {
    /// The request-reading error this refusal answers, or `None` when the
    /// connection is to be dropped without an answer (timeouts, a peer that
    /// went away).
    pub fn from_http(e: &HttpError) -> Option<Refusal> {
        match e {
            HttpError::TimedOut(_) | HttpError::Closed | HttpError::Io(_) => None,
            HttpError::BodyTooLarge { .. } => Some(Refusal::BodyTooLarge),
            HttpError::TooManyHeaders | HttpError::HeadTooLarge => Some(Refusal::HeadersTooLarge),
            HttpError::Empty
            | HttpError::Malformed(_)
            | HttpError::BadLength
            | HttpError::Unsupported(_) => Some(Refusal::InvalidRequest),
        }
    }

    /// The HTTP status of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::InvalidRequest | Refusal::InvalidHostname => 400,
            Refusal::BodyTooLarge => 413,
            Refusal::HeadersTooLarge => 431,
            Refusal::QueueShare { .. } => 429,
            Refusal::QueueFull { .. } => 503,
            Refusal::Store(_) => 500,
        }
    }

    /// The JSON `reason` the agent prints (the original's text where it had
    /// one).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest => "invalid request",
            Refusal::InvalidHostname => "invalid hostname",
            Refusal::BodyTooLarge => "request too large",
            Refusal::HeadersTooLarge => "request headers too large",
            Refusal::QueueShare { .. } => "too many pending requests from this address",
            Refusal::QueueFull { .. } => "pairing queue full",
            Refusal::Store(_) => "pairing queue unavailable",
        }
    }

    /// The `REASON` token of the `pair-reject` log line.
    pub fn token(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest => "invalid-request",
            Refusal::InvalidHostname => "invalid-hostname",
            Refusal::BodyTooLarge => "body-too-large",
            Refusal::HeadersTooLarge => "headers-too-large",
            Refusal::QueueShare { .. } => "queue-share",
            Refusal::QueueFull { .. } => "queue-full",
            Refusal::Store(_) => "queue-write-failed",
        }
    }

    /// What the operator needs beyond the token, for the log's `DETAIL`
    /// field; `None` when the token says it all.
    pub fn detail(&self) -> Option<String> {
        match self {
            Refusal::QueueShare { pending, share } => Some(format!(
                "{pending} requests pending from this address (share {share})"
            )),
            Refusal::QueueFull { max } => {
                Some(format!("{max} requests pending (pairing_max_queue)"))
            }
            Refusal::Store(e) => Some(format!("cannot write the pairing queue: {e}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_text_and_token() {
        let table: [(Refusal, u16, &str, &str); 7] = [
            (
                Refusal::InvalidRequest,
                400,
                "invalid request",
                "invalid-request",
            ),
            (
                Refusal::InvalidHostname,
                400,
                "invalid hostname",
                "invalid-hostname",
            ),
            (
                Refusal::BodyTooLarge,
                413,
                "request too large",
                "body-too-large",
            ),
            (
                Refusal::HeadersTooLarge,
                431,
                "request headers too large",
                "headers-too-large",
            ),
            (
                Refusal::QueueShare {
                    pending: 2,
                    share: 2,
                },
                429,
                "too many pending requests from this address",
                "queue-share",
            ),
            (
                Refusal::QueueFull { max: 10 },
                503,
                "pairing queue full",
                "queue-full",
            ),
            (
                Refusal::Store(io::Error::other("disk full")),
                500,
                "pairing queue unavailable",
                "queue-write-failed",
            ),
        ];
        for (r, status, reason, token) in table {
            assert_eq!(
                (r.status(), r.reason(), r.token()),
                (status, reason, token),
                "{r:?}"
            );
        }
    }

    #[test]
    fn reading_errors_map_to_refusals_or_a_silent_close() {
        assert!(matches!(
            Refusal::from_http(&HttpError::TooManyHeaders),
            Some(Refusal::HeadersTooLarge)
        ));
        assert!(matches!(
            Refusal::from_http(&HttpError::HeadTooLarge),
            Some(Refusal::HeadersTooLarge)
        ));
        assert!(matches!(
            Refusal::from_http(&HttpError::BodyTooLarge { declared: 70_000 }),
            Some(Refusal::BodyTooLarge)
        ));
        assert!(matches!(
            Refusal::from_http(&HttpError::Malformed("request line")),
            Some(Refusal::InvalidRequest)
        ));
        assert!(Refusal::from_http(&HttpError::Closed).is_none());
        assert!(Refusal::from_http(&HttpError::TimedOut(crate::net::http::Phase::Head)).is_none());
    }
}
