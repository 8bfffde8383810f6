//! Twilio request signatures (`X-Twilio-Signature`) for form-encoded webhooks, and for
//! JSON-bodied ones (Event Streams) through `bodySHA256`.
//!
//! signature = base64(HMAC-SHA1(auth_token, url + for each param sorted by name: name + value)).
//! Twilio is inconsistent about ports, so, like Twilio's own helper libraries, the URL is
//! accepted with and without the scheme's default port.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

type HmacSha1 = Hmac<Sha1>;

/// Computes the signature Twilio sends for `url` and form `params`.
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(digest(auth_token, url, params))
}

fn digest(auth_token: &str, url: &str, params: &[(String, String)]) -> Vec<u8> {
    // Sort by name, then value: repeated names are appended in value order, as the
    // helper libraries do (they also de-duplicate identical name/value pairs).
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    // HMAC accepts keys of any length.
    let mut mac = match HmacSha1::new_from_slice(auth_token.as_bytes()) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac.finalize().into_bytes().to_vec()
}

/// True when `signature` matches `url` or one of its port variants. Comparison is in
/// constant time.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    url_variants(url)
        .iter()
        .any(|candidate| constant_time_eq(&digest(auth_token, candidate, params), &given))
}

/// Why a JSON webhook (Event Streams) fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonSignatureError {
    #[error("the URL has no bodySHA256 parameter")]
    NoBodyHash,
    #[error("bodySHA256 does not match the body")]
    BodyHash,
    #[error("X-Twilio-Signature does not match the URL")]
    Signature,
}

/// Verifies a JSON-bodied request: the signature covers only the URL (which carries
/// `bodySHA256`, the hex SHA-256 of the raw body), and that hash must match the body.
pub fn verify_json(
    auth_token: &str,
    url: &str,
    body: &[u8],
    signature: &str,
) -> Result<(), JsonSignatureError> {
    use sha2::{Digest, Sha256};
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let given = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
        .ok_or(JsonSignatureError::NoBodyHash)?;
    let actual = format!("{:x}", Sha256::digest(body));
    if !constant_time_eq(
        actual.as_bytes(),
        given.trim().to_ascii_lowercase().as_bytes(),
    ) {
        return Err(JsonSignatureError::BodyHash);
    }
    if !verify(auth_token, url, &[], signature) {
        return Err(JsonSignatureError::Signature);
    }
    Ok(())
}

/// Equal and not empty, compared in constant time for inputs of one length (the
/// lengths are public: a SHA-1 or SHA-256 digest).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    !a.is_empty() && bool::from(a.ct_eq(b))
}

/// The URL as given, plus the same URL with the scheme's default port added (when it
/// has none) or with its port removed (when it has one, default or not).
pub fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // The host part after any userinfo; IPv6 literals keep their brackets.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    let port_sep = if hostport.starts_with('[') {
        hostport.find("]:").map(|i| i + 1)
    } else {
        hostport.rfind(':')
    };
    match port_sep {
        // Any explicit port: also the URL without it. Twilio's helper libraries accept
        // that form for a non-default port too (Python strips it when validating), so a
        // `public_url` with `:8443` still verifies a signature Twilio made without it.
        Some(i) => {
            out.push(format!("{scheme}://{userinfo}{}{tail}", &hostport[..i]));
        }
        None => out.push(format!(
            "{scheme}://{userinfo}{hostport}:{default_port}{tail}"
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn call_params() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
            ("Caller", "+14158675309"),
        ])
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    // Test vectors from Twilio's helper libraries and docs (reference/twilio.md §3.1).
    #[test]
    fn twilio_vector_plain() {
        assert_eq!(
            compute("12345", URL, &call_params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(verify(
            "12345",
            URL,
            &call_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn twilio_vector_with_port() {
        let with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2";
        assert_eq!(
            compute("12345", with_port, &call_params()),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        );
        // Twilio may sign either form: both verify against either configured URL.
        assert!(verify(
            "12345",
            URL,
            &call_params(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(verify(
            "12345",
            with_port,
            &call_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    /// A `public_url` with an explicit non-default port (a proxy on :8443) accepts the
    /// signature computed over the URL without the port, as the helper libraries do.
    #[test]
    fn explicit_port_url_accepts_the_port_stripped_signature() {
        let with_port = "https://mycompany.com:8443/myapp.php?foo=1&bar=2";
        assert!(verify(
            "12345",
            with_port,
            &call_params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let own = compute("12345", with_port, &call_params());
        assert!(verify("12345", with_port, &call_params(), &own));
        assert_eq!(
            url_variants("http://[::1]:3000/ingress"),
            vec!["http://[::1]:3000/ingress", "http://[::1]/ingress"]
        );
        assert_eq!(
            url_variants("https://u:p@h:9/x"),
            vec!["https://u:p@h:9/x", "https://u:p@h/x"]
        );
    }

    #[test]
    fn twilio_docs_worked_example() {
        let params = p(&[
            ("Digits", "1234"),
            ("To", "+18005551212"),
            ("From", "+14158675310"),
            ("Caller", "+14158675310"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(
            compute(
                "12345",
                "https://example.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn twilio_vector_repeated_params() {
        let params = p(&[
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]);
        assert_eq!(
            compute("12345", URL, &params),
            "IK+Dwps556ElfBT0I3Rgjkr1wJU="
        );
    }

    #[test]
    fn twilio_vector_body_sha256_url_only() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        assert_eq!(compute("12345", url, &[]), "a9nBmqA0ju/hNViExpshrM61xv4=");
    }

    #[test]
    fn json_bodies_are_checked_against_body_sha256_and_the_url() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
        let body = br#"{"property": "value", "boolean": true}"#;
        let sig = "a9nBmqA0ju/hNViExpshrM61xv4=";
        assert_eq!(verify_json("12345", url, body, sig), Ok(()));
        assert_eq!(
            verify_json(
                "12345",
                url,
                br#"{"property": "value", "boolean": false}"#,
                sig
            ),
            Err(JsonSignatureError::BodyHash)
        );
        assert_eq!(
            verify_json("other", url, body, sig),
            Err(JsonSignatureError::Signature)
        );
        assert_eq!(
            verify_json("12345", "https://mycompany.com/myapp.php", body, sig),
            Err(JsonSignatureError::NoBodyHash)
        );
    }

    #[test]
    fn rejects_forgeries() {
        let sig = compute("12345", URL, &call_params());
        assert!(!verify("wrong", URL, &call_params(), &sig));
        assert!(!verify(
            "12345",
            "https://other.com/myapp.php?foo=1&bar=2",
            &call_params(),
            &sig
        ));
        let mut tampered = call_params();
        tampered[1].1 = "9999".into();
        assert!(!verify("12345", URL, &tampered, &sig));
        assert!(!verify("12345", URL, &call_params(), ""));
        assert!(!verify("12345", URL, &call_params(), "not base64 !!"));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn fuzz_signatures(token in "\\PC{0,20}", url in "\\PC{0,60}",
                               params in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,16}"), 0..8),
                               sig in "\\PC{0,40}") {
                let _ = verify(&token, &url, &params, &sig);
                let _ = url_variants(&url);
                let good = compute(&token, &url, &params);
                prop_assert!(verify(&token, &url, &params, &good));
                let mut other = params.clone();
                other.push(("Injected".into(), "1".into()));
                prop_assert!(!verify(&token, &url, &other, &good));
            }
        }
    }

    #[test]
    fn port_variants() {
        assert_eq!(
            url_variants("https://a.com/x"),
            vec!["https://a.com/x", "https://a.com:443/x"]
        );
        assert_eq!(
            url_variants("http://a.com:80/x?q=1"),
            vec!["http://a.com:80/x?q=1", "http://a.com/x?q=1"]
        );
        assert_eq!(
            url_variants("https://a.com:8443/x"),
            vec!["https://a.com:8443/x", "https://a.com/x"]
        );
        assert_eq!(
            url_variants("https://u:p@[::1]/x"),
            vec!["https://u:p@[::1]/x", "https://u:p@[::1]:443/x"]
        );
    }
}
