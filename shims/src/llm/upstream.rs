//! The real model APIs: one pooled HTTP/1.1 client (TLS by rustls with the webpki roots, so
//! no system certificate store or OpenSSL is needed), the request as the agent sent it
//! with the hop-by-hop headers dropped, `accept-encoding: identity` (the gateway must
//! read the stream), and the agent's token replaced by the real key.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::api::Vendor;

/// One upstream: where it is, and the key the gateway holds for it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    pub base: String,
    /// The real API key (never sent by the agent).
    pub key: Option<String>,
}

impl Target {
    /// Checks `base` is an http(s) URL.
    pub fn new(base: &str, key: Option<String>) -> Result<Target, String> {
        let base = base.trim().trim_end_matches('/').to_string();
        let uri: Uri = base.parse().map_err(|e| format!("{base:?} is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http" | "https") if uri.authority().is_some() => {}
            _ => return Err(format!("{base:?} is not an http:// or https:// URL with a host")),
        }
        Ok(Target { base, key: key.filter(|k| !k.trim().is_empty()).map(|k| k.trim().to_string()) })
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The client for both upstreams.
#[derive(Clone)]
pub struct Upstream {
    client: Client<Connector, Full<Bytes>>,
    pub anthropic: Target,
    pub openai: Target,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("anthropic", &self.anthropic.base)
            .field("openai", &self.openai.base)
            .finish()
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and the
/// ones the gateway sets itself.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "accept-encoding",
    "authorization",
    "x-api-key",
];

/// Copies the end-to-end headers of `from`.
pub fn end_to_end(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        if !DROPPED.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

impl Upstream {
    pub fn new(anthropic: Target, openai: Target) -> Result<Upstream, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Upstream { client, anthropic, openai })
    }

    fn target(&self, vendor: Vendor) -> &Target {
        match vendor {
            Vendor::Anthropic => &self.anthropic,
            Vendor::OpenAi => &self.openai,
        }
    }

    /// Sends the agent's request (`parts` with `body`) to `vendor`'s upstream.
    pub async fn send(
        &self,
        vendor: Vendor,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, String> {
        let target = self.target(vendor);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{}{path}", target.base)
            .parse()
            .map_err(|e| format!("cannot build the upstream URL: {e}"))?;
        let mut headers = end_to_end(&parts.headers);
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        if let Some(key) = &target.key {
            let value = match vendor {
                Vendor::Anthropic => HeaderValue::from_str(key).map(|v| ("x-api-key", v)),
                Vendor::OpenAi => {
                    HeaderValue::from_str(&format!("Bearer {key}")).map(|v| ("authorization", v))
                }
            };
            let (name, mut value) =
                value.map_err(|_| "the configured API key is not a valid header value".to_string())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the upstream request: {e}"))?;
        *request.headers_mut() = headers;
        self.client.request(request).await.map_err(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            format!("cannot reach the upstream {}: {text}", target.base)
        })
    }
}
