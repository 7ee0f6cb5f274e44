//! Raw TLS callers and servers that bypass the mesh's own client and server: how something
//! outside the mesh (or a forger) would try, and how a test watches which certificate a peer
//! presents on a fresh connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use examples::hello::HelloRequest;
use examples::hello::greeter_client::GreeterClient;
use mesh_core::tls::VerifyError;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

pub use mesh_core::testing::client_tls;

/// What a raw channel's connections can be.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The server leaf certificates a raw channel's connections were presented, in order.
pub type Presented = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// A tonic channel to `addr` over TLS with `tls` (plaintext with `None`), bypassing the mesh's
/// client.
pub async fn raw_channel(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
) -> anyhow::Result<Channel> {
    Ok(raw_channel_observed(addr, tls).await?.0)
}

/// [`raw_channel`], also recording the leaf certificate the server presents on each connection.
pub async fn raw_channel_observed(
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
) -> anyhow::Result<(Channel, Presented)> {
    let presented = Presented::default();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let connector = tower::service_fn({
        let presented = presented.clone();
        move |_: Uri| {
            let (tls, presented) = (tls.clone(), presented.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let io: Box<dyn Io> = match tls {
                    None => Box::new(tcp),
                    Some(tls) => {
                        let name = ServerName::IpAddress(addr.ip().into());
                        let stream = tokio_rustls::TlsConnector::from(tls)
                            .connect(name, tcp)
                            .await?;
                        if let Some(leaf) = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                        {
                            presented
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(leaf.clone().into_owned());
                        }
                        Box::new(stream)
                    }
                };
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        }
    });
    Ok((endpoint.connect_with_connector(connector).await?, presented))
}

/// One `SayHello` on a fresh raw channel: the reply, or the error (connecting or calling) as
/// text.
pub async fn raw_hello(addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Result<String, String> {
    let channel = raw_channel(addr, tls).await.map_err(|e| format!("{e:#}"))?;
    hello(channel).await
}

/// One `SayHello` with name `ann` on `channel`.
pub async fn hello(channel: Channel) -> Result<String, String> {
    GreeterClient::new(channel)
        .say_hello(HelloRequest { name: "ann".into() })
        .await
        .map(|r| r.into_inner().message)
        .map_err(|s| s.to_string())
}

/// The rustls error inside an I/O error from tokio-rustls, if there is one.
pub fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The mesh verifier's refusal inside an I/O error from tokio-rustls, if that is what it is.
pub fn verify_error(error: &std::io::Error) -> Option<VerifyError> {
    VerifyError::from_rustls(rustls_error(error)?).cloned()
}
