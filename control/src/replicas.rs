//! Several replicas of the control service: a complete view of the mesh's subscribers from any
//! one of them.
//!
//! Each replica serves its own Watch subscribers and keeps its own registry. So that an
//! operator (`/subscribers` on the admin port, `meshctl status`) sees every subscriber from
//! whichever replica answers, a replica is told its peers ([`ControlOptions::peers`]:
//! `host:port` of their gRPC ports, a name that resolves to several addresses, such as the
//! headless Service of the control Deployment, counting as each of them) and asks each of them
//! for its own subscribers when it is asked for the view:
//!
//! - over mTLS on the peers' gRPC port, each side presenting the control service's own
//!   certificate: the peer must present the control service's SPIFFE ID, and answers
//!   `ReplicaSubscribers` only to a caller that presents it (the admin port itself has no
//!   authentication, so no subscriber list leaves a replica over a weaker channel than the
//!   gRPC port's);
//! - within [`PeerLimits`]: at most `max_peers` addresses asked (default 16), each within
//!   `timeout` (default 2 s, all at once), each answer at most `max_response_bytes` (default
//!   16 MiB, about 25,000 subscribers); at most 64 peer names configured; at most two views
//!   assembled at once (more requests wait their turn), so that a client polling the
//!   unauthenticated admin port cannot multiply the calls on every peer;
//! - a peer that cannot be asked, or does not answer in time, is listed in the view as
//!   `unreachable`, named by its address and the `host:port` it came from, with the error, and
//!   the view says `"complete": false`; it is never left out silently;
//! - each row names the replica serving it (`replica`: [`ControlOptions::replica_name`],
//!   default the replica's gRPC address); a replica that reaches itself through a peer name
//!   recognises its own random instance id and skips the answer.
//!
//! `/subscribers?local` lists this replica's own subscribers without asking anyone. The admin
//! port stays as it was (plain HTTP, meant to be reachable only inside the cluster, like
//! Istio's and Linkerd's debug ports): it shows every replica's subscribers now, which each
//! replica's admin port already showed of its own.
//!
//! Replicas number config versions independently (each counts the changes it saw since it
//! started), so versions are reported per replica and never compared across replicas. A
//! subscriber that moves to another replica opens a new Watch stream there, whose first
//! snapshot is always full; increments are only ever relative to what the same stream sent.
//!
//! [`ControlOptions::peers`]: crate::ControlOptions::peers
//! [`ControlOptions::replica_name`]: crate::ControlOptions::replica_name
//!
//! - `local`: this replica's own rows, for the admin page and for peers;
//! - `peers`: asking the peers, within the bounds;
//! - `view`: the merged view the admin page serves.

pub(crate) mod local;
pub(crate) mod peers;
pub(crate) mod view;

pub use peers::{
    DEFAULT_MAX_PEERS, DEFAULT_PEER_MAX_RESPONSE_BYTES, DEFAULT_PEER_TIMEOUT, InvalidPeer,
    PeerError, PeerLimits,
};
