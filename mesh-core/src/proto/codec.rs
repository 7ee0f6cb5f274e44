//! The control API's gRPC codec: prost's, except for what a failed decode is reported as.
//!
//! tonic's prost codec calls every message it cannot decode INTERNAL, on both sides. A request
//! the server cannot decode (a `string` field that is not UTF-8, a truncated or mistyped
//! field) is the caller's fault, not the server's: this codec answers it with
//! INVALID_ARGUMENT and prost's description, which names the field and the problem (e.g.
//! `CertifyRequest.token: invalid string value: data is not UTF-8 encoded`). A response the
//! client cannot decode stays INTERNAL: the fault is not the caller's.

// The parent module allows these lints for its generated code; this one is written by hand.
#![warn(missing_docs, unreachable_pub, clippy::all)]

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec as TonicCodec, DecodeBuf, Decoder as TonicDecoder};
use tonic::{Code, Status};
use tonic_prost::ProstEncoder;

use super::{
    CertifyRequest, CertifyResponse, ReplicaSubscribersRequest, ReplicaSubscribersResponse,
    Snapshot, WatchRequest,
};

/// A message of the control API, and whose fault it is when it cannot be decoded.
pub trait Decoded: Message + Default {
    /// The status code of a message that does not decode: INVALID_ARGUMENT for a request
    /// (the server decodes it, the caller sent it), INTERNAL for a response.
    const UNDECODABLE: Code;
}

impl Decoded for CertifyRequest {
    const UNDECODABLE: Code = Code::InvalidArgument;
}

impl Decoded for WatchRequest {
    const UNDECODABLE: Code = Code::InvalidArgument;
}

impl Decoded for CertifyResponse {
    const UNDECODABLE: Code = Code::Internal;
}

impl Decoded for Snapshot {
    const UNDECODABLE: Code = Code::Internal;
}

impl Decoded for ReplicaSubscribersRequest {
    const UNDECODABLE: Code = Code::InvalidArgument;
}

impl Decoded for ReplicaSubscribersResponse {
    const UNDECODABLE: Code = Code::Internal;
}

/// The codec of the generated `Control` client and server: prost's encoder, and a decoder
/// that reports an undecodable message with [`Decoded::UNDECODABLE`].
#[derive(Debug)]
pub struct Codec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for Codec<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E, D> TonicCodec for Codec<E, D>
where
    E: Message + Send + 'static,
    D: Decoded + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = ProstEncoder<E>;
    type Decoder = Decoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decoder::with_buffer_settings(BufferSettings::default())
    }
}

/// Decodes a `D`; see [`Codec`].
#[derive(Debug)]
pub struct Decoder<D> {
    buffer: BufferSettings,
    message: PhantomData<D>,
}

impl<D> Decoder<D> {
    /// A decoder whose stream buffers as `buffer` says (tonic's default: 8 KiB to start); a
    /// stream of small messages, such as Watch's ACKs, needs far less.
    pub fn with_buffer_settings(buffer: BufferSettings) -> Self {
        Self {
            buffer,
            message: PhantomData,
        }
    }
}

impl<D: Decoded> TonicDecoder for Decoder<D> {
    type Item = D;
    type Error = Status;

    fn buffer_settings(&self) -> BufferSettings {
        self.buffer
    }

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        D::decode(buf)
            .map(Some)
            .map_err(|error| Status::new(D::UNDECODABLE, undecodable(&error)))
    }
}

/// prost's description of a decode failure: it names the message, the field and the problem,
/// and quotes none of the bytes.
fn undecodable(error: &prost::DecodeError) -> String {
    format!("the message could not be decoded: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CertifyRequest { csr_der: [], token: <bytes> }` as it travels.
    fn certify_request_with_token(token: &[u8]) -> Vec<u8> {
        let mut wire = vec![0x12, u8::try_from(token.len()).unwrap()];
        wire.extend_from_slice(token);
        wire
    }

    #[test]
    fn a_non_utf8_token_is_the_callers_fault_and_named() {
        let error = CertifyRequest::decode(certify_request_with_token(b"tok\xffen").as_slice())
            .expect_err("not UTF-8");
        let status = Status::new(CertifyRequest::UNDECODABLE, undecodable(&error));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("CertifyRequest.token") && status.message().contains("UTF-8"),
            "{status:?}"
        );
        let good = CertifyRequest::decode(certify_request_with_token(b"token").as_slice())
            .expect("decodes");
        assert_eq!(good.token, "token");
    }

    #[test]
    fn an_undecodable_response_is_not_the_callers_fault() {
        assert_eq!(CertifyResponse::UNDECODABLE, Code::Internal);
        assert_eq!(Snapshot::UNDECODABLE, Code::Internal);
        assert_eq!(WatchRequest::UNDECODABLE, Code::InvalidArgument);
    }
}
