//! Watch messages encoded once and shared by every subscriber they go to.
//!
//! A config change sends one message to thousands of subscribers, most of them the same
//! bytes: the full snapshot of a projection, or the increment from the content they hold. Each
//! is encoded here once ([`Encoded`]), and a subscriber's stream item ([`WatchMessage`]) holds
//! the shared bytes by reference count: no clone of the message, no encoding and no encode
//! buffer per subscriber (a buffer sized by the largest snapshot a stream ever sent, kept for
//! the stream's life, was most of a subscriber's memory when its service was large).
//!
//! The one field that differs between subscribers of one increment, `base_version` (the
//! version each holds), is written in front of the shared bytes: protobuf fields may come in
//! any order, and the shared encoding never carries that field.

use bytes::{BufMut, Bytes, BytesMut};
use mesh_core::proto;
use tonic_prost::prost::Message as _;
use tonic_prost::prost::encoding::{encode_varint, encoded_len_varint};

/// `Snapshot.base_version`'s key: field 7, varint.
const BASE_VERSION_KEY: u8 = 7 << 3;

/// The gRPC message prefix: a compression flag and a 4-byte big-endian length.
const GRPC_PREFIX: usize = 5;

/// Messages up to this size go out as one chunk (one HTTP/2 DATA frame), the shared bytes
/// copied behind the prefix; larger ones as two, the shared bytes not copied.
const COPY_BELOW: usize = 1024;

/// A Watch message's encoding (`base_version` unset), shared by the subscribers it goes to.
#[derive(Debug)]
pub(crate) struct Encoded {
    bytes: Bytes,
}

/// One message of one subscriber's Watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WatchMessage {
    /// The version the subscriber holds, for an increment; 0 for a full snapshot.
    base_version: u64,
    shared: Bytes,
}

/// `message` encoded, to be shared.
pub(crate) fn encode(message: &proto::Snapshot) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

// === impl Encoded ===

impl Encoded {
    /// Encodes `message`, whose `base_version` each subscriber's [`WatchMessage`] sets.
    pub(crate) fn new(mut message: proto::Snapshot) -> Self {
        message.base_version = 0;
        Self {
            bytes: encode(&message),
        }
    }

    /// This message for a subscriber that holds `base_version` (0: none, a full snapshot).
    pub(crate) fn for_subscriber(&self, base_version: u64) -> WatchMessage {
        WatchMessage {
            base_version,
            shared: self.bytes.clone(),
        }
    }
}

// === impl WatchMessage ===

impl WatchMessage {
    /// A full snapshot, encoded as `shared`.
    pub(crate) fn full(shared: Bytes) -> Self {
        Self {
            base_version: 0,
            shared,
        }
    }

    /// The message's bytes as they go on the stream: the gRPC prefix and the subscriber's own
    /// field, then the shared encoding: in one chunk, or for a large message in two (the
    /// second not copied).
    pub(crate) fn into_chunks(self) -> (Bytes, Option<Bytes>) {
        let mut own = [0u8; 1 + 10];
        let own_len = if self.base_version == 0 {
            0
        } else {
            own[0] = BASE_VERSION_KEY;
            let mut at = &mut own[1..];
            encode_varint(self.base_version, &mut at);
            1 + encoded_len_varint(self.base_version)
        };
        let len = own_len + self.shared.len();
        let copy = self.shared.len() < COPY_BELOW;
        let mut first = BytesMut::with_capacity(
            GRPC_PREFIX + own_len + if copy { self.shared.len() } else { 0 },
        );
        first.put_u8(0);
        // A message over 4 GiB cannot be: a projection is bounded by the config's limits, far
        // below it.
        first.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        first.put_slice(&own[..own_len]);
        if copy {
            first.put_slice(&self.shared);
            (first.freeze(), None)
        } else {
            (first.freeze(), Some(self.shared))
        }
    }

    /// The message as a subscriber decodes it (for tests and the test hook that loses
    /// messages: the request path never decodes what it sends).
    pub(crate) fn decode(&self) -> proto::Snapshot {
        let (first, rest) = self.clone().into_chunks();
        let mut all = first[GRPC_PREFIX..].to_vec();
        all.extend_from_slice(rest.as_deref().unwrap_or_default());
        // Bytes encoded here from a message always decode; this module's tests decode every
        // shape it makes.
        proto::Snapshot::decode(all.as_slice()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn increment(endpoints: usize) -> proto::Snapshot {
        proto::Snapshot {
            version: 9,
            destinations: vec![proto::Destination {
                found: true,
                endpoints: (0..endpoints)
                    .map(|i| proto::Endpoint {
                        address: format!("10.0.0.{}:80", i % 250),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn each_subscriber_decodes_the_shared_message_with_its_own_base_version() {
        let encoded = Encoded::new(increment(3));
        for base in [0, 1, 8, 300, u64::MAX] {
            let message = encoded.for_subscriber(base);
            let decoded = message.decode();
            assert_eq!(decoded.base_version, base);
            assert_eq!(
                proto::Snapshot {
                    base_version: 0,
                    ..decoded
                },
                increment(3)
            );
            let (first, rest) = message.into_chunks();
            assert!(rest.is_none(), "a small message is one chunk");
            let len = u32::from_be_bytes(first[1..5].try_into().expect("4 bytes")) as usize;
            assert_eq!((first[0], len), (0, first.len() - GRPC_PREFIX));
        }
    }

    #[test]
    fn a_large_message_shares_its_bytes_instead_of_copying_them() {
        let encoded = Encoded::new(increment(200));
        assert!(encoded.bytes.len() >= COPY_BELOW);
        let message = encoded.for_subscriber(4);
        assert_eq!(message.decode().base_version, 4);
        let (first, rest) = message.into_chunks();
        let rest = rest.expect("a second chunk");
        assert_eq!(rest.as_ptr(), encoded.bytes.as_ptr(), "not copied");
        let len = u32::from_be_bytes(first[1..5].try_into().expect("4 bytes")) as usize;
        assert_eq!(len, first.len() - GRPC_PREFIX + rest.len());
    }

    #[test]
    fn a_base_version_set_on_the_message_is_not_shared() {
        let encoded = Encoded::new(proto::Snapshot {
            base_version: 5,
            ..increment(1)
        });
        assert_eq!(encoded.for_subscriber(0).decode().base_version, 0);
    }
}
