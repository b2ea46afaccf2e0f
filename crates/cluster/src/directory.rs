//! The directory handle: one region's keys in one Redis, used by one node.
//!
//! Writes act as this node (its lease, its instances, its identities, its slots); reads see
//! the whole region. Cheap to clone; every clone shares one connection.

use std::sync::Arc;

use redis::{Script, Value};

use crate::config::{ConfigError, Target};
use crate::error::DirectoryError;
use crate::ids::{NodeId, RegionName};
use crate::keys::Keys;
use crate::link::Link;

#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    keys: Keys,
    region: RegionName,
    node: NodeId,
}

impl Directory {
    /// A directory for `node` of `region`. No I/O: the first call connects, so a node can
    /// start while Redis is down (and call [`Directory::renew`] until it succeeds).
    pub fn new(target: &Target, region: RegionName, node: NodeId) -> Result<Self, ConfigError> {
        let inner = Inner {
            link: Link::new(target)?,
            keys: Keys::new(&region),
            region,
            node,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The node this directory acts as.
    pub fn node(&self) -> &NodeId {
        &self.inner.node
    }

    pub fn region(&self) -> &RegionName {
        &self.inner.region
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub(crate) fn link(&self) -> &Link {
        &self.inner.link
    }

    /// Run one of this crate's scripts. `args` follow the region prefix (`ARGV[1]`); `key`
    /// names the data concerned in a `Malformed` error.
    pub(crate) async fn eval(
        &self,
        script: &Script,
        key: &str,
        args: &[&str],
    ) -> Result<Value, DirectoryError> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(self.keys().prefix());
        for a in args {
            invocation.arg(*a);
        }
        let invocation = &invocation;
        self.link()
            .run(key, |mut c| async move { invocation.invoke_async(&mut c).await })
            .await
    }

    /// Run one plain command.
    pub(crate) async fn query(&self, cmd: &redis::Cmd, key: &str) -> Result<Value, DirectoryError> {
        self.link()
            .run(key, |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("region", self.region())
            .field("node", self.node())
            .finish()
    }
}
