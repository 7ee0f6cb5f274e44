//! Conversions between the model ([`crate::snapshot`]) and the wire ([`crate::proto`]).
//!
//! Model to wire cannot fail. Wire to model validates everything again, so a client never
//! trusts the control service blindly, and reports each error with its path
//! (`destinations[0].endpoints[1].address: ...`).

use crate::error::ValidationErrors;
use crate::proto;
use crate::snapshot::{ServiceName, ServiceNameError, Snapshot};

impl From<&ServiceName> for proto::ServiceRef {
    fn from(name: &ServiceName) -> Self {
        Self {
            namespace: name.namespace.clone(),
            name: name.name.clone(),
        }
    }
}

impl TryFrom<&proto::ServiceRef> for ServiceName {
    type Error = ServiceNameError;
    fn try_from(wire: &proto::ServiceRef) -> Result<Self, Self::Error> {
        ServiceName::new(&wire.namespace, &wire.name)
    }
}

impl From<&Snapshot> for proto::Snapshot {
    fn from(snapshot: &Snapshot) -> Self {
        let _ = snapshot;
        todo!()
    }
}

impl TryFrom<proto::Snapshot> for Snapshot {
    type Error = ValidationErrors;
    fn try_from(wire: proto::Snapshot) -> Result<Self, Self::Error> {
        let _ = wire;
        todo!()
    }
}
