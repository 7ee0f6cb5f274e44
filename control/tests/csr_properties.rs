//! Property tests (proptest) of the CSR path: whatever a caller sends, signing never panics;
//! whatever a valid CSR asks for, it is refused for the names it has no right to, or the
//! certificate carries only the identity the token proved, is not a CA, and verifies as an
//! SVID.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_control::{Ca, SignError};
use mesh_core::SpiffeId;
use mesh_core::testing::csr::csr_with;
use mesh_core::testing::{spiffe_id, trust_domain};
use mesh_core::tls::{TrustBundle, Usage, spiffe_id_of, verify_svid};
use proptest::prelude::*;
use rcgen::{BasicConstraints, IsCa, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};

fn proven_identity() -> SpiffeId {
    spiffe_id("default", "greeter")
}

/// What a CSR may ask for: names of every kind, including other SPIFFE IDs.
fn requested_san() -> impl Strategy<Value = SanType> {
    prop_oneof![
        "[a-z]{1,10}\\.example".prop_map(|d| SanType::DnsName(d.try_into().unwrap())),
        "[a-z]{1,10}".prop_map(|sa| SanType::URI(
            format!("spiffe://mesh.local/ns/kube-system/sa/{sa}")
                .try_into()
                .unwrap()
        )),
        "[a-z]{1,10}"
            .prop_map(|x| SanType::URI(format!("https://{x}.example/").try_into().unwrap())),
        any::<[u8; 4]>().prop_map(|ip| SanType::IpAddress(std::net::Ipv4Addr::from(ip).into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_mutated_csr_is_refused_or_signed_for_the_proven_identity_only(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, mut csr) = csr_with(|_| {});
        for (at, byte) in edits {
            let i = at.index(csr.len());
            csr[i] = byte;
        }
        csr.truncate(cut.index(csr.len() + 1).max(1));
        let ca = Ca::ephemeral(&trust_domain()).unwrap();
        // A flipped byte in the signed part breaks the signature; in the signature's own
        // encoding, the DER. Either way: an error, never a panic; and if it somehow still
        // verifies, the certificate names only the proven identity.
        if let Ok(issued) = ca.sign(&csr, &proven_identity(), Duration::from_secs(3600)) {
            prop_assert_eq!(spiffe_id_of(&issued.chain_der[0]).unwrap(), proven_identity());
        }
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let ca = Ca::ephemeral(&trust_domain()).unwrap();
        prop_assert!(ca.sign(&bytes, &proven_identity(), Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn a_csr_gets_only_the_proven_identity_whatever_it_asks(
        sans in prop::collection::vec(requested_san(), 0..4),
        wants_ca in any::<bool>(),
    ) {
        let ca = Ca::ephemeral(&trust_domain()).unwrap();
        let (_, csr) = csr_with(|params| {
            params.subject_alt_names = sans;
            if wants_ca {
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            }
        });
        let issued = match ca.sign(&csr, &proven_identity(), Duration::from_secs(3600)) {
            Ok(issued) => issued,
            // Names the identity is not entitled to refuse the request, naming each of them.
            Err(SignError::NamesNotEntitled { refused, .. }) => {
                prop_assert!(!refused.is_empty());
                return Ok(());
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        };
        let chain: Vec<CertificateDer<'static>> = issued.chain_der.clone();
        let bundle: TrustBundle = ca.trust_bundle();
        // One URI SAN, a valid SPIFFE ID of the trust domain, not a CA: all checked here.
        let id = verify_svid(&bundle, &chain[0], &chain[1..], UnixTime::now(), Usage::Client).unwrap();
        prop_assert_eq!(&id, &proven_identity());
        prop_assert_eq!(spiffe_id_of(&chain[0]).unwrap(), proven_identity());
        verify_svid(&bundle, &chain[0], &chain[1..], UnixTime::now(), Usage::Server).unwrap();
    }
}
