//! NetEase Yunxin callback families.
//!
//! NetEase signs its 抄送 (callback copy) with headers over the body's MD5,
//! so, unlike ZEGO, the body holds no signing fields.

pub mod cloud_play;

use crate::decode;
use crate::error::IngestError;
use crate::providers::{AuthContext, Authenticate, Authenticated, Provider, SignInput};
use crate::verify::{self, Verified, VerifyError};
use axum::http::HeaderMap;
use serde_json::Value;

/// NetEase's proof: `CurTime`, `MD5` and `CheckSum` headers, the MD5 over the
/// exact body bytes. The body is covered, so there is no replay key: a
/// replayed request is the same event, answered as a repeat.
pub struct NeteaseChecksum;

impl Authenticate for NeteaseChecksum {
    fn authenticate(
        &self,
        context: AuthContext<'_>,
        headers: &HeaderMap,
        body: &[u8],
        now_ms: i64,
    ) -> Result<Verified<Authenticated>, IngestError> {
        let signing = verify::netease::signing_headers(headers)?;
        let app = context
            .find_app(Provider::Netease, signing.app_key.as_deref())
            .ok_or(VerifyError::UnknownApp)?;
        let verified = verify::netease::verify(
            body,
            body,
            &signing,
            &app.secrets,
            now_ms,
            context.tolerance_secs,
        )?;
        // Only now, the body proven, is it decoded.
        Ok(verified.map(|body| {
            let payload = match decode::decode(body) {
                Ok(d) => d.value,
                // Authentic but not JSON (the vendor's own 505 example is one): keep the text.
                Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
            };
            Authenticated {
                app_id: app.app_id.clone(),
                // The console's address check: an empty body or `{}`.
                probe: body.trim_ascii().is_empty()
                    || payload.as_object().is_some_and(|m| m.is_empty()),
                payload,
                replay_key: None,
                volatile_keys: &[],
                credential_keys: &[],
            }
        }))
    }

    fn sign(
        &self,
        input: SignInput<'_>,
        app_id: &str,
        secret: &str,
        now_ms: u64,
    ) -> anyhow::Result<(Vec<(String, String)>, String)> {
        let body = match input {
            SignInput::Generated(value) => value.to_string(),
            SignInput::Given(bytes) => std::str::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("the NetEase body must be UTF-8 text"))?
                .to_owned(),
        };
        let md5 = verify::netease::body_md5(body.as_bytes());
        let cur_time = now_ms.to_string();
        let checksum = verify::netease::checksum(secret, &md5, &cur_time);
        let headers = vec![
            (
                "Content-Type".into(),
                "application/json;charset=utf-8".into(),
            ),
            ("AppKey".into(), app_id.to_owned()),
            ("CurTime".into(), cur_time),
            ("MD5".into(), md5),
            ("CheckSum".into(), checksum),
        ];
        Ok((headers, body))
    }
}
