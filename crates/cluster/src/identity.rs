//! Identities: which node hosts the session of a participant identity in a room.
//!
//! A new session always takes the identity (LiveKit replaces the older session); a session
//! that ends clears the identity only if it still points at that session, atomically, so an
//! older session's departure never removes a newer one.

use pylon_core::ids::{ParticipantIdentity, ParticipantSid, RoomName};

use crate::directory::Directory;
use crate::error::DirectoryError;
use crate::ids::NodeId;
use crate::lua;
use crate::reply;

/// Where an identity's session is hosted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityEntry {
    pub node: NodeId,
    pub sid: ParticipantSid,
}

impl IdentityEntry {
    /// Stored as `"<node id> <participant sid>"` (node ids contain no space).
    pub(crate) fn encode(node: &NodeId, sid: &ParticipantSid) -> String {
        format!("{} {}", node.as_str(), sid.as_str())
    }

    fn decode(v: &redis::Value, key: &str) -> Result<Self, DirectoryError> {
        let s = reply::text(v, key)?;
        let bad = || DirectoryError::malformed(key, format!("identity entry {s:?} is not \"<node> <sid>\""));
        let (node, sid) = s.split_once(' ').ok_or_else(bad)?;
        Ok(Self {
            node: NodeId::parse(node).map_err(|_| bad())?,
            sid: ParticipantSid::parse(sid).ok_or_else(bad)?,
        })
    }

    fn decode_optional(v: &redis::Value, key: &str) -> Result<Option<Self>, DirectoryError> {
        match v {
            redis::Value::Nil => Ok(None),
            v => Self::decode(v, key).map(Some),
        }
    }
}

impl Directory {
    /// `identity` in `room` is now session `sid` on this node. Returns the entry it replaced
    /// (whose node should end that older session), if any and readable (an unreadable one is
    /// replaced all the same, and logged).
    pub async fn set_identity(
        &self,
        room: &RoomName,
        identity: &ParticipantIdentity,
        sid: &ParticipantSid,
    ) -> Result<Option<IdentityEntry>, DirectoryError> {
        let key = self.keys().identities(room);
        let entry = IdentityEntry::encode(self.node(), sid);
        let old = self
            .eval(
                &lua::SET_IDENTITY,
                &key,
                &[room.as_str(), identity.as_str(), &entry],
            )
            .await?;
        Ok(IdentityEntry::decode_optional(&old, &key).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "replaced an unreadable identity entry");
            None
        }))
    }

    /// Session `sid` on this node has ended: clear `identity` if it still points at it.
    /// Returns whether it was cleared.
    pub async fn clear_identity(
        &self,
        room: &RoomName,
        identity: &ParticipantIdentity,
        sid: &ParticipantSid,
    ) -> Result<bool, DirectoryError> {
        let key = self.keys().identities(room);
        let entry = IdentityEntry::encode(self.node(), sid);
        let cleared = self
            .eval(
                &lua::CLEAR_IDENTITY,
                &key,
                &[room.as_str(), identity.as_str(), &entry],
            )
            .await?;
        Ok(reply::int(&cleared, &key)? == 1)
    }

    /// Where `identity`'s session in `room` is hosted, if on a live node.
    pub async fn identity(
        &self,
        room: &RoomName,
        identity: &ParticipantIdentity,
    ) -> Result<Option<IdentityEntry>, DirectoryError> {
        let key = self.keys().identities(room);
        let entry = self
            .eval(&lua::IDENTITY, &key, &[room.as_str(), identity.as_str()])
            .await?;
        IdentityEntry::decode_optional(&entry, &key)
    }
}
