//! Credentials out of text meant for people: logs, condition messages, Events. An HTTP sink
//! URL may carry a token in its query string (`?token=...`) or a user and password
//! (`https://user:pass@host/`); wherever such a URL appears in a message, both are replaced by
//! `REDACTED`, the scheme, host and path kept so the message still says where.

/// What replaces a secret part of a URL.
pub const REDACTED: &str = "REDACTED";

/// `url` with its userinfo and every query value (and any fragment) redacted.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("{REDACTED}@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let (tail, fragment) = match tail.find('#') {
        Some(hash) => (&tail[..hash], Some(REDACTED)),
        None => (tail, None),
    };
    let mut out = format!("{scheme}{host}");
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) => format!("{name}={REDACTED}"),
                    None if pair.is_empty() => String::new(),
                    None => REDACTED.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        None => out.push_str(tail),
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `text` with every `http://` or `https://` URL in it passed through [`redact_url`]; a URL
/// ends at whitespace or a quote, bracket or comma.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url_part = &rest[start..];
        let end = url_part
            .find(|c: char| c.is_whitespace() || "\"'<>()[]{},;`".contains(c))
            .unwrap_or(url_part.len());
        out.push_str(&redact_url(&url_part[..end]));
        rest = &url_part[end..];
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    [lower.find("http://"), lower.find("https://")]
        .into_iter()
        .flatten()
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_in_the_query_string_is_redacted_and_the_host_and_path_kept() {
        assert_eq!(
            redact_url("https://hooks.example.com/wa?token=s3cr3t&x=1"),
            "https://hooks.example.com/wa?token=REDACTED&x=REDACTED"
        );
    }

    #[test]
    fn a_user_and_password_are_redacted() {
        assert_eq!(
            redact_url("http://bob:pa55@sink.local:8080/in"),
            "http://REDACTED@sink.local:8080/in"
        );
    }

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        let url = "https://hooks.example.com/whatsapp";
        assert_eq!(redact_url(url), url);
        assert_eq!(
            redact_urls("posting to https://a.example/x failed"),
            "posting to https://a.example/x failed"
        );
    }

    #[test]
    fn every_url_in_a_message_is_redacted_wherever_it_stands() {
        let message =
            "sink.httpUrl \"https://u:p@h.example/p?key=k\" refused; retry HTTPS://h2/?a=b, then";
        let redacted = redact_urls(message);
        assert!(!redacted.contains("u:p"), "{redacted}");
        assert!(!redacted.contains("key=k"), "{redacted}");
        assert!(!redacted.contains("a=b"), "{redacted}");
        assert_eq!(
            redacted,
            "sink.httpUrl \"https://REDACTED@h.example/p?key=REDACTED\" refused; retry HTTPS://h2/?a=REDACTED, then"
        );
    }
}
