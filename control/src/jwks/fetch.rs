//! Fetching one JWK Set document: over `https://` (the system's roots, ring) or `http://` with
//! hyper, or from a `file://`, bounded in size and time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_core::jwt::MAX_JWKS_BYTES;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The URI is not one this fetcher reads.
    #[error("unsupported URI")]
    Uri,
    /// The fetch took longer than the timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The issuer answered with an error status.
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("not UTF-8 text")]
    NotText,
    /// Connecting or reading failed.
    #[error("{0}")]
    Transport(String),
}

/// An HTTP(S) client for JWK Sets, shared by every fetch.
#[derive(Clone)]
pub(crate) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

impl Fetcher {
    /// A client that trusts the system's roots for `https://` (none when they cannot be
    /// read: https fetches then fail, and say so).
    pub(crate) fn new(timeout: Duration) -> Self {
        let provider = rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_provider_and_native_roots(provider) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system roots: https JWKS URIs cannot be fetched");
                let config = rustls::ClientConfig::builder_with_provider(
                    rustls::crypto::ring::default_provider().into(),
                )
                .with_safe_default_protocol_versions()
                // Invariant: ring's default provider supports the default protocol versions.
                .unwrap_or_else(|_| unreachable!("ring supports TLS 1.2 and 1.3"))
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// The document at `uri`.
    pub(crate) async fn fetch(&self, uri: &str) -> Result<String, FetchError> {
        let work = async {
            let bytes = match uri.strip_prefix("file://") {
                Some(path) => read_file(path).await?,
                None => self.get(uri).await?,
            };
            String::from_utf8(bytes).map_err(|_| FetchError::NotText)
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }

    async fn get(&self, uri: &str) -> Result<Vec<u8>, FetchError> {
        let uri: http::Uri = uri.parse().map_err(|_| FetchError::Uri)?;
        let request = http::Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|_| FetchError::Uri)?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FetchError::Transport(error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES);
        let bytes = body.collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                FetchError::TooLarge
            } else {
                FetchError::Transport(e.to_string())
            }
        })?;
        Ok(bytes.to_bytes().to_vec())
    }
}

/// A file of at most [`MAX_JWKS_BYTES`].
async fn read_file(path: &str) -> Result<Vec<u8>, FetchError> {
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| FetchError::Transport(format!("{path}: {e}")))?;
    if metadata.len() > MAX_JWKS_BYTES as u64 {
        return Err(FetchError::TooLarge);
    }
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| FetchError::Transport(format!("{path}: {e}")))?;
    // The file may have grown between the two calls.
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(FetchError::TooLarge);
    }
    Ok(bytes)
}

/// An error with its sources, for the log.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A one-shot HTTP/1.1 server on 127.0.0.1 answering every connection with `response`.
    async fn serve(response: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            }
        });
        format!("http://{addr}/jwks.json")
    }

    fn http(status: &str, body: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        response
    }

    #[tokio::test]
    async fn documents_are_fetched_within_their_bounds() {
        let fetcher = Fetcher::new(Duration::from_secs(5));
        let ok = serve(http("200 OK", b"{\"keys\":[]}")).await;
        assert_eq!(fetcher.fetch(&ok).await.unwrap(), "{\"keys\":[]}");

        let big = serve(http("200 OK", &vec![b' '; MAX_JWKS_BYTES + 1])).await;
        assert!(matches!(
            fetcher.fetch(&big).await,
            Err(FetchError::TooLarge)
        ));

        let failing = serve(http("503 Service Unavailable", b"")).await;
        assert!(matches!(
            fetcher.fetch(&failing).await,
            Err(FetchError::Status(s)) if s == http::StatusCode::SERVICE_UNAVAILABLE
        ));

        let binary = serve(http("200 OK", &[0xff, 0xfe])).await;
        assert!(matches!(
            fetcher.fetch(&binary).await,
            Err(FetchError::NotText)
        ));

        // A server that never answers: the timeout ends the fetch.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent = format!("http://{}/", listener.local_addr().unwrap());
        let quick = Fetcher::new(Duration::from_millis(200));
        assert!(matches!(
            quick.fetch(&silent).await,
            Err(FetchError::Timeout(_))
        ));
        drop(listener);
    }

    #[tokio::test]
    async fn files_are_read_within_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = Fetcher::new(Duration::from_secs(5));
        let small = dir.path().join("small.json");
        std::fs::write(&small, "{\"keys\":[]}").unwrap();
        let uri = format!("file://{}", small.display());
        assert_eq!(fetcher.fetch(&uri).await.unwrap(), "{\"keys\":[]}");

        let big = dir.path().join("big.json");
        std::fs::write(&big, vec![b' '; MAX_JWKS_BYTES + 1]).unwrap();
        let uri = format!("file://{}", big.display());
        assert!(matches!(
            fetcher.fetch(&uri).await,
            Err(FetchError::TooLarge)
        ));

        let missing = format!("file://{}", dir.path().join("missing").display());
        assert!(matches!(
            fetcher.fetch(&missing).await,
            Err(FetchError::Transport(_))
        ));
    }
}
