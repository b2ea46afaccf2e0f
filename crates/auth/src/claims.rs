//! The claims of a LiveKit access token and the permissions they grant.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// The `video` grant. Absent booleans take LiveKit's defaults through the accessors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoGrant {
    #[serde(skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_record: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub room_join: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub room: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub destination_room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub can_publish_sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(skip_serializing_if = "is_false")]
    pub ingress_admin: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub hidden: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub recorder: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub agent: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a participant may do, resolved from a [`VideoGrant`] with LiveKit's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParticipantPermission {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    /// Empty means every source is allowed.
    pub can_publish_sources: Vec<String>,
    pub can_update_metadata: bool,
    pub hidden: bool,
    pub recorder: bool,
    pub agent: bool,
}

impl VideoGrant {
    pub fn can_publish(&self) -> bool {
        self.can_publish.unwrap_or(true)
    }
    pub fn can_subscribe(&self) -> bool {
        self.can_subscribe.unwrap_or(true)
    }
    pub fn can_publish_data(&self) -> bool {
        self.can_publish_data.unwrap_or_else(|| self.can_publish())
    }
    pub fn can_update_own_metadata(&self) -> bool {
        self.can_update_own_metadata.unwrap_or(false)
    }
    pub fn permission(&self) -> ParticipantPermission {
        ParticipantPermission {
            can_publish: self.can_publish(),
            can_subscribe: self.can_subscribe(),
            can_publish_data: self.can_publish_data(),
            can_publish_sources: self.can_publish_sources.clone(),
            can_update_metadata: self.can_update_own_metadata(),
            hidden: self.hidden,
            recorder: self.recorder,
            agent: self.agent,
        }
    }
}

/// The claims of a verified token. Unknown claims are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Claims {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub iss: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub attributes: HashMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoGrant>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

impl Claims {
    /// The participant identity: `sub`, or `jti` when `sub` is empty (as LiveKit does).
    pub fn identity(&self) -> &str {
        if self.sub.is_empty() {
            &self.jti
        } else {
            &self.sub
        }
    }

    pub fn video(&self) -> VideoGrant {
        self.video.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_grants_take_livekit_defaults() {
        let g: VideoGrant = serde_json::from_str(r#"{"roomJoin":true,"room":"r"}"#).unwrap();
        assert!(g.can_publish() && g.can_subscribe() && g.can_publish_data());
        assert!(!g.can_update_own_metadata());
    }

    #[test]
    fn publish_data_follows_publish_when_absent() {
        let g: VideoGrant = serde_json::from_str(r#"{"canPublish":false}"#).unwrap();
        assert!(!g.can_publish_data());
    }

    #[test]
    fn identity_falls_back_to_jti() {
        let c = Claims {
            jti: "j".into(),
            ..Default::default()
        };
        assert_eq!(c.identity(), "j");
    }
}
