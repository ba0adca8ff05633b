//! NetEase Yunxin 抄送 (callback copy) signatures.
//!
//! Each request carries `CurTime` (Unix ms, as text), `MD5` (hex MD5 of the
//! body) and `CheckSum = sha1_hex(AppSecret + MD5 + CurTime)`, plus an
//! optional `AppKey`. Unlike ZEGO, the body is covered: through the MD5,
//! which the CheckSum signs. The MD5 is checked against the raw received
//! bytes, never a re-serialization, since any change in whitespace or key
//! order changes the digest.
//!
//! This is not NetEase's outbound-API formula (`AppSecret + Nonce + CurTime`,
//! seconds): 抄送 has no nonce.

use super::{Verified, VerifyError, check_fresh, matching_secret, parse_hex};
use crate::secret::SecretString;
use axum::http::HeaderMap;
use md5::Md5;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The signing headers as sent (text kept verbatim: the CheckSum covers it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningHeaders {
    pub app_key: Option<String>,
    pub cur_time: String,
    pub md5: String,
    pub checksum: String,
}

/// Reads `AppKey` (optional), `CurTime`, `MD5` and `CheckSum`; header names
/// are case-insensitive (the NERoom docs send `appkey`).
///
/// `AppKey` is optional because NetEase's own IM example omits it; the caller
/// uses it, when present, to pick the app. A missing or empty `CurTime`,
/// `MD5` or `CheckSum` is [`VerifyError::MissingSignature`]; a value that is
/// not UTF-8 is [`VerifyError::BadSignature`] for the signing headers (it
/// cannot be a hex digest or a time) and [`VerifyError::UnknownApp`] for
/// `AppKey` (it cannot name a configured app).
pub fn signing_headers(headers: &HeaderMap) -> Result<SigningHeaders, VerifyError> {
    let app_key = text(headers, "appkey").map_err(|_| VerifyError::UnknownApp)?;
    let required = |name| {
        text(headers, name)
            .map_err(|_| VerifyError::BadSignature)?
            .ok_or(VerifyError::MissingSignature)
    };
    Ok(SigningHeaders {
        cur_time: required("curtime")?,
        md5: required("md5")?,
        checksum: required("checksum")?,
        app_key,
    })
}

/// The header's text, `None` when absent or empty, `Err` when not UTF-8.
fn text(headers: &HeaderMap, name: &str) -> Result<Option<String>, std::str::Utf8Error> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(value.as_bytes())?;
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// `sha1_hex(secret + md5_hex + cur_time)`, lowercase: the CheckSum NetEase sends.
pub fn checksum(secret: &str, md5_hex: &str, cur_time: &str) -> String {
    hex::encode(checksum_digest(secret, md5_hex, cur_time))
}

fn checksum_digest(secret: &str, md5_hex: &str, cur_time: &str) -> [u8; 20] {
    Sha1::new()
        .chain_update(secret)
        .chain_update(md5_hex)
        .chain_update(cur_time)
        .finalize()
        .into()
}

/// Lowercase hex MD5 of the raw body bytes.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Verifies the body's MD5, then the CheckSum against each secret in order,
/// then freshness of `CurTime`.
///
/// Hex digests are compared as bytes, so uppercase hex passes. The CheckSum is
/// recomputed over the `MD5` header text exactly as sent, since that text,
/// whatever its case, is what the sender hashed.
pub fn verify<T>(
    payload: T,
    body: &[u8],
    headers: &SigningHeaders,
    secrets: &[SecretString],
    now_ms: i64,
    tolerance_secs: u64,
) -> Result<Verified<T>, VerifyError> {
    let sent_md5: [u8; 16] = parse_hex(&headers.md5).ok_or(VerifyError::BadSignature)?;
    let body_md5: [u8; 16] = Md5::digest(body).into();
    if !bool::from(sent_md5[..].ct_eq(&body_md5[..])) {
        return Err(VerifyError::BadSignature);
    }
    let sent_checksum: [u8; 20] = parse_hex(&headers.checksum).ok_or(VerifyError::BadSignature)?;
    let position = matching_secret(secrets, &sent_checksum, |secret| {
        checksum_digest(secret, &headers.md5, &headers.cur_time)
    })
    .ok_or(VerifyError::BadSignature)?;
    check_fresh(&headers.cur_time, now_ms, tolerance_secs)?;
    Ok(Verified::new(payload, position))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "a1b2c3d4e5f6";
    const CUR_TIME: &str = "1608110108512";

    fn signed(body: &[u8], secret: &str) -> SigningHeaders {
        let md5 = body_md5(body);
        SigningHeaders {
            app_key: None,
            checksum: checksum(secret, &md5, CUR_TIME),
            md5,
            cur_time: CUR_TIME.into(),
        }
    }

    fn header_map(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn the_probe_body_signs_as_documented() {
        assert_eq!(body_md5(b"{}"), "99914b932bd37a50b983c5e7c90ae93b");
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            checksum(SECRET, "99914b932bd37a50b983c5e7c90ae93b", CUR_TIME),
            "6282168edf9e3024f84e2b5636b0bbae8c10d736"
        );
    }

    #[test]
    fn header_names_are_case_insensitive_and_app_key_is_optional() {
        let map = header_map(&[("curtime", "1"), ("md5", "m"), ("checksum", "c")]);
        let h = signing_headers(&map).expect("headers");
        assert_eq!(h.app_key, None);
        assert_eq!(
            (h.cur_time.as_str(), h.md5.as_str(), h.checksum.as_str()),
            ("1", "m", "c")
        );
        let map = header_map(&[
            ("appkey", "k"),
            ("curtime", "1"),
            ("md5", "m"),
            ("checksum", "c"),
        ]);
        assert_eq!(
            signing_headers(&map).expect("headers").app_key.as_deref(),
            Some("k")
        );
    }

    #[test]
    fn missing_or_empty_signing_headers_are_missing_signature() {
        let full = [("curtime", "1"), ("md5", "m"), ("checksum", "c")];
        for skip in 0..full.len() {
            let pairs: Vec<_> = full
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                signing_headers(&header_map(&pairs)),
                Err(VerifyError::MissingSignature)
            );
        }
        let empty = header_map(&[("curtime", ""), ("md5", "m"), ("checksum", "c")]);
        assert_eq!(signing_headers(&empty), Err(VerifyError::MissingSignature));
    }

    #[test]
    fn non_utf8_header_values_are_rejected() {
        let mut map = header_map(&[("curtime", "1"), ("md5", "m"), ("checksum", "c")]);
        map.insert(
            "md5",
            HeaderValue::from_bytes(b"\xff\xfe").expect("obs-text"),
        );
        assert_eq!(signing_headers(&map), Err(VerifyError::BadSignature));
        let mut map = header_map(&[("curtime", "1"), ("md5", "m"), ("checksum", "c")]);
        map.insert(
            "appkey",
            HeaderValue::from_bytes(b"\xff").expect("obs-text"),
        );
        assert_eq!(signing_headers(&map), Err(VerifyError::UnknownApp));
    }

    #[test]
    fn a_correctly_signed_body_verifies() {
        let body = br#"{"eventType":503}"#;
        let ok = verify(
            7,
            body,
            &signed(body, SECRET),
            &[SecretString::new(SECRET)],
            0,
            0,
        )
        .expect("verifies");
        assert_eq!((ok.into_inner(), 0), (7, 0));
    }

    #[test]
    fn a_changed_body_or_wrong_secret_is_bad_signature() {
        let body = br#"{"eventType":503}"#;
        let secrets = [SecretString::new(SECRET)];
        let headers = signed(body, SECRET);
        let tampered = br#"{"eventType":502}"#;
        assert_eq!(
            verify((), tampered, &headers, &secrets, 0, 0).err(),
            Some(VerifyError::BadSignature)
        );
        // An attacker can recompute the MD5 but not the CheckSum.
        let recomputed = SigningHeaders {
            md5: body_md5(tampered),
            ..headers.clone()
        };
        assert_eq!(
            verify((), tampered, &recomputed, &secrets, 0, 0).err(),
            Some(VerifyError::BadSignature)
        );
        let other = signed(body, "other");
        assert_eq!(
            verify((), body, &other, &secrets, 0, 0).err(),
            Some(VerifyError::BadSignature)
        );
        let garbage = SigningHeaders {
            checksum: "not hex".into(),
            ..headers
        };
        assert_eq!(
            verify((), body, &garbage, &secrets, 0, 0).err(),
            Some(VerifyError::BadSignature)
        );
    }

    #[test]
    fn uppercase_hex_headers_verify_over_the_md5_text_as_sent() {
        let body = b"{}";
        let md5 = body_md5(body).to_ascii_uppercase();
        let headers = SigningHeaders {
            app_key: None,
            checksum: checksum(SECRET, &md5, CUR_TIME).to_ascii_uppercase(),
            md5,
            cur_time: CUR_TIME.into(),
        };
        assert!(verify((), body, &headers, &[SecretString::new(SECRET)], 0, 0).is_ok());
    }

    #[test]
    fn a_body_signed_with_the_old_secret_verifies_at_position_one() {
        let body = b"{}";
        let secrets = [SecretString::new("new"), SecretString::new("old")];
        let ok = verify((), body, &signed(body, "old"), &secrets, 0, 0).expect("verifies");
        assert_eq!(ok.secret_position(), 1);
    }

    #[test]
    fn the_signature_is_checked_before_freshness() {
        let body = b"{}";
        let secrets = [SecretString::new(SECRET)];
        let cur_ms: i64 = CUR_TIME.parse().expect("integer");
        let headers = signed(body, SECRET);
        assert!(verify((), body, &headers, &secrets, cur_ms + 299_000, 300).is_ok());
        assert_eq!(
            verify((), body, &headers, &secrets, cur_ms + 301_000, 300).err(),
            Some(VerifyError::StaleTimestamp)
        );
        let forged = SigningHeaders {
            checksum: "0".repeat(40),
            ..headers
        };
        assert_eq!(
            verify((), body, &forged, &secrets, cur_ms + 301_000, 300).err(),
            Some(VerifyError::BadSignature)
        );
    }
}
