//! A minimal Room API (Twirp, protobuf) client for the admin commands.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use pylon_auth::{Claims, VideoGrant};

/// Where the server is and how to sign requests.
pub struct ApiClient {
    pub url: String,
    pub api_key: String,
    pub api_secret: String,
}

impl ApiClient {
    fn token(&self, grant: VideoGrant) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let claims = Claims {
            iss: self.api_key.clone(),
            nbf: Some(now),
            exp: Some(now + 600),
            video: Some(grant),
            ..Default::default()
        };
        pylon_auth::mint(&claims, self.api_secret.as_bytes())
    }

    /// Call `livekit.RoomService/<method>` with the grant it needs.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        method: &str,
        grant: VideoGrant,
        req: &Req,
    ) -> anyhow::Result<Resp> {
        let base = self
            .url
            .trim_end_matches('/')
            .replacen("ws://", "http://", 1)
            .replacen("wss://", "https://", 1);
        if base.starts_with("https://") {
            return Err(anyhow!("https URLs are not supported by this CLI yet"));
        }
        let uri = format!("{base}/twirp/livekit.RoomService/{method}");
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let request = Request::post(&uri)
            .header("content-type", "application/protobuf")
            .header("authorization", format!("Bearer {}", self.token(grant)))
            .body(Full::new(Bytes::from(req.encode_to_vec())))?;
        let resp = client
            .request(request)
            .await
            .with_context(|| format!("calling {uri}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(anyhow!(
                "{method} failed ({status}): {}",
                String::from_utf8_lossy(&body)
            ));
        }
        Ok(Resp::decode(body)?)
    }
}
