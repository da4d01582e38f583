//! Webhook signature checks, over the raw body exactly as received.
//!
//! Meta signs the body with HMAC-SHA256 keyed by the app secret and sends
//! `X-Hub-Signature-256: sha256=<hex>`. The body Meta sends is already escaped (`\u00e9`, `\/`),
//! so the HMAC must be computed over the received bytes, never over re-serialized JSON.
//! WASender sends its configured secret verbatim in `X-Webhook-Signature`.
//! Both comparisons run in constant time.
//!
//! A pipeline may trust several secrets at once (several apps on one endpoint, or the old and
//! the new secret while one is rotated). [`match_meta`] and [`match_shared`] then check the
//! request against every candidate, always all of them, and pick the one that matched without
//! a branch on the comparison: the time an answer takes grows with the number of candidates (a
//! fact of the configuration, bounded by the caller) but does not tell which one matched, or
//! how close a forged value came to any of them.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Meta's signature header.
pub const META_SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// WASender's signature header.
pub const WASENDER_SIGNATURE_HEADER: &str = "x-webhook-signature";

/// Why a signature was refused. The wording is safe to show to the caller: it never includes
/// the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is missing")]
    Missing,
    #[error("signature header must start with sha256=")]
    MissingPrefix,
    #[error("signature must be 64 hex characters")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks Meta's `X-Hub-Signature-256` header value against `body`. Hex digits may be of
/// either case; the prefix is matched case-insensitively.
pub fn verify_meta(
    secret: &[u8],
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<(), SignatureError> {
    match_meta(&[secret], body, header).map(|_| ())
}

/// Checks Meta's signature header against `body` under every secret of `secrets` and returns
/// the index of the one that signed it. Every candidate's HMAC is computed and compared in
/// constant time, whether an earlier one matched or not.
pub fn match_meta<S: AsRef<[u8]>>(
    secrets: &[S],
    body: &[u8],
    header: Option<&[u8]>,
) -> Result<usize, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let header = trim_ascii(header);
    let hex_digest = header
        .get(..7)
        .filter(|prefix| prefix.eq_ignore_ascii_case(b"sha256="))
        .map(|_| &header[7..])
        .ok_or(SignatureError::MissingPrefix)?;
    if hex_digest.len() != 64 {
        return Err(SignatureError::Malformed);
    }
    let mut expected = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut expected).map_err(|_| SignatureError::Malformed)?;
    first_match(secrets.iter().map(|secret| {
        #[cfg(test)]
        tests::count_comparison();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_ref())
            .expect("HMAC accepts keys of any length");
        mac.update(body);
        mac.finalize().into_bytes().ct_eq(&expected)
    }))
}

/// Checks WASender's `X-Webhook-Signature` header value against the configured secret.
pub fn verify_wasender(secret: &[u8], header: Option<&[u8]>) -> Result<(), SignatureError> {
    match_shared(&[secret], header).map(|_| ())
}

/// Checks a shared secret sent verbatim (WASender's header, Meta's verify token) against every
/// candidate of `secrets` in constant time and returns the index of the one it equals.
pub fn match_shared<S: AsRef<[u8]>>(
    secrets: &[S],
    given: Option<&[u8]>,
) -> Result<usize, SignatureError> {
    let given = Sha256::digest(trim_ascii(given.ok_or(SignatureError::Missing)?));
    first_match(secrets.iter().map(|secret| {
        #[cfg(test)]
        tests::count_comparison();
        Sha256::digest(secret.as_ref()).ct_eq(&given)
    }))
}

/// The index of the first comparison that matched, found without branching on any of them:
/// every comparison is consumed whatever the earlier ones said.
fn first_match(comparisons: impl Iterator<Item = Choice>) -> Result<usize, SignatureError> {
    let mut matched = Choice::from(0);
    let mut index = 0u32;
    for (i, equal) in comparisons.enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        index.conditional_assign(&i, equal & !matched);
        matched |= equal;
    }
    if bool::from(matched) {
        Ok(index as usize)
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Compares two secrets in constant time. Both sides are hashed first so that neither their
/// contents nor their lengths show in the timing.
pub fn constant_time_eq(given: &[u8], wanted: &[u8]) -> bool {
    bool::from(Sha256::digest(given).ct_eq(&Sha256::digest(wanted)))
}

/// `sha256=<lowercase hex>` for `body`, as Meta would send it. Used by the load generator and
/// tests.
pub fn sign_meta(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Lowercase hex SHA-256 of `body`: the digest carried in every record's headers.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";

    thread_local! {
        static COMPARISONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Called once per candidate digest computed and compared (test builds only).
    pub(super) fn count_comparison() {
        COMPARISONS.with(|c| c.set(c.get() + 1));
    }

    fn comparisons_of(check: impl FnOnce()) -> usize {
        COMPARISONS.with(|c| c.set(0));
        check();
        COMPARISONS.with(|c| c.get())
    }

    #[test]
    fn every_candidate_is_computed_and_compared_whichever_matched_or_came_close() {
        // The timing side of the constant-time promise, checked without a clock: the work
        // done is the same for a match at any place, a near miss of any secret, or nothing.
        let secrets: Vec<String> = (0..16).map(|i| format!("secret-{i:02}")).collect();
        let body = b"{}";
        for index in [0, 7, 15] {
            let genuine = sign_meta(secrets[index].as_bytes(), body);
            let mut near = genuine.clone().into_bytes();
            let last = near.len() - 1;
            near[last] = if near[last] == b'0' { b'1' } else { b'0' };
            assert_eq!(
                comparisons_of(|| assert_eq!(
                    match_meta(&secrets, body, Some(genuine.as_bytes())),
                    Ok(index)
                )),
                16
            );
            assert_eq!(
                comparisons_of(|| assert!(match_meta(&secrets, body, Some(&near)).is_err())),
                16
            );
            let mut near_shared = secrets[index].clone().into_bytes();
            let end = near_shared.len() - 1;
            near_shared[end] = b'x';
            assert_eq!(
                comparisons_of(|| assert_eq!(
                    match_shared(&secrets, Some(secrets[index].as_bytes())),
                    Ok(index)
                )),
                16
            );
            assert_eq!(
                comparisons_of(|| assert!(match_shared(&secrets, Some(&near_shared)).is_err())),
                16
            );
        }
        for count in [1, 4] {
            let forged = sign_meta(b"stranger", body);
            assert_eq!(
                comparisons_of(|| assert!(match_meta(
                    &secrets[..count],
                    body,
                    Some(forged.as_bytes())
                )
                .is_err())),
                count
            );
        }
    }

    #[test]
    fn meta_signature_over_unicode_escaped_body_verifies_on_the_raw_bytes() {
        // Meta sends non-ASCII escaped; re-serializing would turn \u00e9 into é and break the HMAC.
        let body =
            br#"{"text":{"body":"J'ai mang\u00e9 des p\u00e2tes \ud83c\udf5d https:\/\/x.y @me"}}"#;
        let header = sign_meta(SECRET, body);
        assert_eq!(verify_meta(SECRET, body, Some(header.as_bytes())), Ok(()));
        let reserialized =
            serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(body).unwrap())
                .unwrap();
        assert_eq!(
            verify_meta(SECRET, &reserialized, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn uppercase_hex_and_prefix_are_accepted() {
        let body = b"{}";
        let header = sign_meta(SECRET, body);
        let upper = format!("SHA256={}", header[7..].to_ascii_uppercase());
        assert_eq!(verify_meta(SECRET, body, Some(upper.as_bytes())), Ok(()));
    }

    #[test]
    fn missing_header_prefix_or_wrong_length_is_refused() {
        let body = b"{}";
        let header = sign_meta(SECRET, body);
        assert_eq!(
            verify_meta(SECRET, body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_meta(SECRET, body, Some(&header.as_bytes()[7..])),
            Err(SignatureError::MissingPrefix)
        );
        assert_eq!(
            verify_meta(SECRET, body, Some(&header.as_bytes()[..header.len() - 2])),
            Err(SignatureError::Malformed)
        );
        let long = format!("{header}00");
        assert_eq!(
            verify_meta(SECRET, body, Some(long.as_bytes())),
            Err(SignatureError::Malformed)
        );
        let not_hex = format!("sha256={}", "zz".repeat(32));
        assert_eq!(
            verify_meta(SECRET, body, Some(not_hex.as_bytes())),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_meta(SECRET, body, Some(b"")),
            Err(SignatureError::MissingPrefix)
        );
    }

    #[test]
    fn meta_signature_with_another_secret_or_body_mismatches() {
        let header = sign_meta(b"other", b"{}");
        assert_eq!(
            verify_meta(SECRET, b"{}", Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        let header = sign_meta(SECRET, b"{}");
        assert_eq!(
            verify_meta(SECRET, b"{ }", Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn each_of_several_secrets_is_found_by_its_index_and_a_stranger_matches_none() {
        let secrets = [&b"app-one"[..], b"app-two", b"app-three"];
        let body = b"{}";
        for (i, secret) in secrets.iter().enumerate() {
            let header = sign_meta(secret, body);
            assert_eq!(match_meta(&secrets, body, Some(header.as_bytes())), Ok(i));
            assert_eq!(match_shared(&secrets, Some(secret)), Ok(i));
        }
        let forged = sign_meta(b"app-four", body);
        assert_eq!(
            match_meta(&secrets, body, Some(forged.as_bytes())),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            match_shared(&secrets, Some(b"app-four")),
            Err(SignatureError::Mismatch)
        );
        // The same secret twice (a key copied during a rotation) answers with the first.
        let twice = [&b"same"[..], b"same"];
        let header = sign_meta(b"same", body);
        assert_eq!(match_meta(&twice, body, Some(header.as_bytes())), Ok(0));
        let none: [&[u8]; 0] = [];
        assert_eq!(
            match_meta(&none, body, Some(header.as_bytes())),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn wasender_secret_must_match_exactly() {
        assert_eq!(verify_wasender(b"s3cret", Some(b"s3cret")), Ok(()));
        assert_eq!(verify_wasender(b"s3cret", Some(b" s3cret\r\n")), Ok(()));
        assert_eq!(
            verify_wasender(b"s3cret", Some(b"s3cre")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_wasender(b"s3cret", Some(b"S3CRET")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_wasender(b"s3cret", None),
            Err(SignatureError::Missing)
        );
    }
}
