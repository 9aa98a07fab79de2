//! The three model APIs the gateway understands, which one a request is for, each API's
//! own error shape (so an SDK raises its usual exception, never a parse error), and the
//! type of the bodies the gateway sends.

use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

/// The body of every response the gateway sends.
pub type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// Which API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    Chat,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
    /// Anything else on the Anthropic upstream (passed through).
    AnthropicOther,
    /// Anything else on the OpenAI upstream (passed through).
    OpenAiOther,
}

/// Which upstream serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    Anthropic,
    OpenAi,
}

impl Api {
    /// Routes a request by its path (and, for paths both vendors could serve, by how the
    /// client authenticates: `x-api-key` / `anthropic-version` is the Anthropic SDK).
    pub fn route(method: &http::Method, path: &str, headers: &http::HeaderMap) -> Api {
        let post = method == http::Method::POST;
        match path {
            "/v1/messages" if post => Api::Anthropic,
            "/v1/chat/completions" if post => Api::Chat,
            "/v1/responses" if post => Api::Responses,
            _ if path.starts_with("/v1/messages") => Api::AnthropicOther,
            _ if path.starts_with("/v1/chat/") || path.starts_with("/v1/responses") => Api::OpenAiOther,
            _ if headers.contains_key("x-api-key") || headers.contains_key("anthropic-version") => {
                Api::AnthropicOther
            }
            _ => Api::OpenAiOther,
        }
    }

    pub fn vendor(self) -> Vendor {
        match self {
            Api::Anthropic | Api::AnthropicOther => Vendor::Anthropic,
            Api::Chat | Api::Responses | Api::OpenAiOther => Vendor::OpenAi,
        }
    }

    /// The name recorded in `details.api`.
    pub fn name(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic.messages",
            Api::Chat => "openai.chat.completions",
            Api::Responses => "openai.responses",
            Api::AnthropicOther => "anthropic",
            Api::OpenAiOther => "openai",
        }
    }

    /// Whether tool calls in this API's responses are decided.
    pub fn governed(self) -> bool {
        matches!(self, Api::Anthropic | Api::Chat | Api::Responses)
    }
}

/// What went wrong, in terms both error shapes can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No token, or one no registered agent holds (401).
    Auth,
    /// The agent is retired (403).
    Forbidden,
    /// The body is not what the API accepts (400).
    BadRequest,
    /// The body is over the gateway's limit (413).
    TooLarge,
    /// The upstream could not be reached or answered badly (502).
    Upstream,
    /// The gateway cannot do its part (ledgerd unreachable while identifying the agent, 503).
    Unavailable,
}

impl Fault {
    pub fn status(self) -> StatusCode {
        match self {
            Fault::Auth => StatusCode::UNAUTHORIZED,
            Fault::Forbidden => StatusCode::FORBIDDEN,
            Fault::BadRequest => StatusCode::BAD_REQUEST,
            Fault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Fault::Upstream => StatusCode::BAD_GATEWAY,
            Fault::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn anthropic_type(self) -> &'static str {
        match self {
            Fault::Auth => "authentication_error",
            Fault::Forbidden => "permission_error",
            Fault::BadRequest => "invalid_request_error",
            Fault::TooLarge => "request_too_large",
            Fault::Upstream => "api_error",
            Fault::Unavailable => "overloaded_error",
        }
    }

    fn openai_type(self) -> (&'static str, Option<&'static str>) {
        match self {
            Fault::Auth => ("invalid_request_error", Some("invalid_api_key")),
            Fault::Forbidden => ("invalid_request_error", Some("agent_retired")),
            Fault::BadRequest => ("invalid_request_error", None),
            Fault::TooLarge => ("invalid_request_error", Some("request_too_large")),
            Fault::Upstream | Fault::Unavailable => ("server_error", None),
        }
    }
}

/// The error body in `vendor`'s shape.
pub fn error_body(vendor: Vendor, fault: Fault, message: &str) -> Bytes {
    let value = match vendor {
        Vendor::Anthropic => {
            json!({"type": "error", "error": {"type": fault.anthropic_type(), "message": message}})
        }
        Vendor::OpenAi => {
            let (kind, code) = fault.openai_type();
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
        }
    };
    Bytes::from(value.to_string())
}

/// The error as one SSE event, for a stream that has already begun (Anthropic's `error`
/// event; OpenAI's SDKs raise on a data object with an `error` member).
pub fn error_event(vendor: Vendor, fault: Fault, message: &str) -> super::sse::Event {
    let data = String::from_utf8_lossy(&error_body(vendor, fault, message)).into_owned();
    match vendor {
        Vendor::Anthropic => super::sse::Event::new("error", data),
        Vendor::OpenAi => super::sse::Event::new("error", data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let h = http::HeaderMap::new();
        let post = http::Method::POST;
        assert_eq!(Api::route(&post, "/v1/messages", &h), Api::Anthropic);
        assert_eq!(Api::route(&post, "/v1/messages/count_tokens", &h), Api::AnthropicOther);
        assert_eq!(Api::route(&post, "/v1/chat/completions", &h), Api::Chat);
        assert_eq!(Api::route(&post, "/v1/responses", &h), Api::Responses);
        assert_eq!(Api::route(&http::Method::GET, "/v1/responses/r_1", &h), Api::OpenAiOther);
        assert_eq!(Api::route(&http::Method::GET, "/v1/models", &h), Api::OpenAiOther);
        let mut a = http::HeaderMap::new();
        a.insert("x-api-key", http::HeaderValue::from_static("k"));
        assert_eq!(Api::route(&http::Method::GET, "/v1/models", &a), Api::AnthropicOther);
    }

    #[test]
    fn error_shapes() {
        let a: serde_json::Value =
            serde_json::from_slice(&error_body(Vendor::Anthropic, Fault::Auth, "no")).expect("json");
        assert_eq!(a["error"]["type"], "authentication_error");
        let o: serde_json::Value =
            serde_json::from_slice(&error_body(Vendor::OpenAi, Fault::Auth, "no")).expect("json");
        assert_eq!(o["error"]["code"], "invalid_api_key");
    }
}
