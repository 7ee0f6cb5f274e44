//! The post-quantum hybrid key exchange X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem, code
//! point 0x11ec) for rustls' ring provider, which has no ML-KEM of its own: ML-KEM-768 from
//! libcrux (formally verified, portable Rust) and X25519 from ring.
//!
//! Shares and secrets are the two parts concatenated, ML-KEM first: the client sends its
//! encapsulation key (1,184 bytes) and its X25519 key (32), the server answers with the
//! ciphertext (1,088) and its X25519 key (32), and both derive the ML-KEM shared secret (32)
//! followed by the X25519 one (32). The client also offers its X25519 part as a share of the
//! classical group on its own ([`ActiveKeyExchange::hybrid_component`]), so a server without
//! the hybrid group answers with X25519 at once, without a second round trip.

use rustls::crypto::{ActiveKeyExchange, CompletedKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};

use libcrux_ml_kem::mlkem768::{self, MlKem768Ciphertext, MlKem768PrivateKey, MlKem768PublicKey};

/// X25519MLKEM768, preferred on every mesh connection (see the module docs).
pub static X25519_MLKEM768: &dyn SupportedKxGroup = &X25519MlKem768;

/// The ML-KEM-768 encapsulation key's length.
const ENCAPSULATION_KEY_LEN: usize = 1184;
/// The ML-KEM-768 ciphertext's length.
const CIPHERTEXT_LEN: usize = 1088;
/// An X25519 public key's length.
const X25519_LEN: usize = 32;

/// The classical half, from rustls' ring provider.
fn x25519() -> &'static dyn SupportedKxGroup {
    rustls::crypto::ring::kx_group::X25519
}

/// `N` random bytes from the provider's system generator.
fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::FailedToGetRandomBytes)?;
    Ok(bytes)
}

fn invalid_share() -> Error {
    Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare)
}

/// The group itself.
#[derive(Debug)]
struct X25519MlKem768;

impl SupportedKxGroup for X25519MlKem768 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let classical = x25519().start()?;
        let keys = mlkem768::generate_key_pair(random()?);
        let (private, public) = keys.into_parts();
        let mut share = Vec::with_capacity(ENCAPSULATION_KEY_LEN + X25519_LEN);
        share.extend_from_slice(public.as_slice());
        share.extend_from_slice(classical.pub_key());
        Ok(Box::new(Active {
            classical,
            private,
            share,
        }))
    }

    /// The server's side: encapsulate to the client's key, and complete X25519.
    fn start_and_complete(&self, client_share: &[u8]) -> Result<CompletedKeyExchange, Error> {
        if client_share.len() != ENCAPSULATION_KEY_LEN + X25519_LEN {
            return Err(invalid_share());
        }
        let (encapsulation_key, classical_share) = client_share.split_at(ENCAPSULATION_KEY_LEN);
        let public = MlKem768PublicKey::try_from(encapsulation_key).map_err(|_| invalid_share())?;
        // FIPS 203's check of an encapsulation key: every coefficient reduced.
        if !mlkem768::validate_public_key(&public) {
            return Err(invalid_share());
        }
        let classical = x25519().start_and_complete(classical_share)?;
        let (ciphertext, post_quantum_secret) = mlkem768::encapsulate(&public, random()?);
        let mut share = Vec::with_capacity(CIPHERTEXT_LEN + X25519_LEN);
        share.extend_from_slice(ciphertext.as_slice());
        share.extend_from_slice(&classical.pub_key);
        Ok(CompletedKeyExchange {
            group: NamedGroup::X25519MLKEM768,
            pub_key: share,
            secret: joined(&post_quantum_secret, &classical.secret),
        })
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        // Hybrid groups are TLS 1.3 only.
        version == ProtocolVersion::TLSv1_3
    }
}

/// The client's half-done exchange.
struct Active {
    classical: Box<dyn ActiveKeyExchange>,
    private: MlKem768PrivateKey,
    share: Vec<u8>,
}

impl ActiveKeyExchange for Active {
    fn complete(self: Box<Self>, server_share: &[u8]) -> Result<SharedSecret, Error> {
        if server_share.len() != CIPHERTEXT_LEN + X25519_LEN {
            return Err(invalid_share());
        }
        let (ciphertext, classical_share) = server_share.split_at(CIPHERTEXT_LEN);
        let ciphertext = MlKem768Ciphertext::try_from(ciphertext).map_err(|_| invalid_share())?;
        let classical = self.classical.complete(classical_share)?;
        // ML-KEM decapsulation never fails: a bad ciphertext yields an unrelated secret (implicit
        // rejection), and the handshake's Finished check fails.
        let post_quantum = mlkem768::decapsulate(&self.private, &ciphertext);
        Ok(joined(&post_quantum, &classical))
    }

    fn hybrid_component(&self) -> Option<(NamedGroup, &[u8])> {
        Some((NamedGroup::X25519, self.classical.pub_key()))
    }

    fn complete_hybrid_component(
        self: Box<Self>,
        server_share: &[u8],
    ) -> Result<SharedSecret, Error> {
        self.classical.complete(server_share)
    }

    fn pub_key(&self) -> &[u8] {
        &self.share
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519MLKEM768
    }
}

/// The ML-KEM secret followed by the X25519 one.
fn joined(post_quantum: &[u8], classical: &SharedSecret) -> SharedSecret {
    let mut secret = Vec::with_capacity(post_quantum.len() + classical.secret_bytes().len());
    secret.extend_from_slice(post_quantum);
    secret.extend_from_slice(classical.secret_bytes());
    SharedSecret::from(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_derive_the_same_secret_of_both_parts() {
        let client = X25519_MLKEM768.start().unwrap();
        assert_eq!(client.pub_key().len(), ENCAPSULATION_KEY_LEN + X25519_LEN);
        let (group, classical) = client.hybrid_component().unwrap();
        assert_eq!(group, NamedGroup::X25519);
        assert_eq!(classical, &client.pub_key()[ENCAPSULATION_KEY_LEN..]);
        let server = X25519_MLKEM768
            .start_and_complete(client.pub_key())
            .unwrap();
        assert_eq!(server.pub_key.len(), CIPHERTEXT_LEN + X25519_LEN);
        let client_secret = client.complete(&server.pub_key).unwrap();
        assert_eq!(client_secret.secret_bytes(), server.secret.secret_bytes());
        assert_eq!(client_secret.secret_bytes().len(), 64);
    }

    #[test]
    fn malformed_shares_are_refused() {
        let client = X25519_MLKEM768.start().unwrap();
        let share = client.pub_key().to_vec();
        // Wrong lengths, both ways.
        assert!(X25519_MLKEM768.start_and_complete(&share[1..]).is_err());
        assert!(X25519_MLKEM768.start_and_complete(&[0; 16]).is_err());
        assert!(client.complete(&[0; CIPHERTEXT_LEN]).is_err());
        // An encapsulation key with a coefficient out of range (all bits set).
        let mut bad = share.clone();
        bad[..ENCAPSULATION_KEY_LEN - 32].fill(0xff);
        assert!(X25519_MLKEM768.start_and_complete(&bad).is_err());
    }

    #[test]
    fn a_tampered_ciphertext_gives_a_different_secret() {
        let client = X25519_MLKEM768.start().unwrap();
        let mut server = X25519_MLKEM768
            .start_and_complete(client.pub_key())
            .unwrap();
        server.pub_key[0] ^= 1;
        let client_secret = client.complete(&server.pub_key).unwrap();
        assert_ne!(client_secret.secret_bytes(), server.secret.secret_bytes());
    }
}
