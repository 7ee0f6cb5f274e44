//! Validation of [`MeshConfig`]: every error, each with the path of its field.

use std::collections::BTreeMap;

use super::MeshConfig;
use crate::error::ValidationErrors;
use crate::snapshot::{Destination, Endpoint, Route, ServiceName};
use crate::spiffe::TrustDomain;

/// A config that passed validation, indexed by service, ready to project destinations from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ValidConfig {
    services: BTreeMap<ServiceName, ValidService>,
}

/// One validated service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValidService {
    endpoints: Vec<Endpoint>,
    routes: Vec<Route>,
}

impl MeshConfig {
    /// Checks every field; endpoint identities must belong to `trust_domain`.
    pub fn validate(&self, trust_domain: &TrustDomain) -> Result<ValidConfig, ValidationErrors> {
        let _ = trust_domain;
        todo!()
    }
}

impl ValidConfig {
    /// The destination as a client sees it, with every backend its routes reference resolved.
    pub fn destination(&self, service: &ServiceName) -> Destination {
        let _ = service;
        todo!()
    }

    /// Whether the config has `service`.
    pub fn contains(&self, service: &ServiceName) -> bool {
        self.services.contains_key(service)
    }

    /// Every service, in name order.
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> {
        self.services.keys()
    }
}
