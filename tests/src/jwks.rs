//! A JWKS server for end-user authentication tests: a plain HTTP/1.1 server on 127.0.0.1
//! that serves one JWK Set document, which the test replaces, breaks (an error status or a
//! document that is not a JWK Set) or restores, and counts the fetches it answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksAnswer {
    /// 200 with this document.
    Document(String),
    /// This error status.
    Status(StatusCode),
}

/// A running JWKS server; stops when dropped.
pub struct JwksServer {
    /// Where it listens.
    pub addr: SocketAddr,
    answer: Arc<Mutex<JwksAnswer>>,
    fetches: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    /// Serves `document` at every path.
    pub async fn start(document: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let answer = Arc::new(Mutex::new(JwksAnswer::Document(document)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (a, f) = (answer.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (answer, fetches) = (a.clone(), f.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let answer = answer.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        fetches.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let response = match answer {
                                JwksAnswer::Document(doc) => {
                                    Response::new(Full::new(Bytes::from(doc)))
                                }
                                JwksAnswer::Status(status) => {
                                    let mut r = Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = status;
                                    r
                                }
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            answer,
            fetches,
            task,
        })
    }

    /// The URI a `jwksUri` names.
    pub fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// From now on, answers `answer`.
    pub fn set(&self, answer: JwksAnswer) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }

    /// How many fetches it has answered.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
