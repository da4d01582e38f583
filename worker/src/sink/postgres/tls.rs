//! TLS of the postgres sink: libpq's `sslmode` and `sslrootcert` over rustls (ring provider).
//!
//! tokio-postgres negotiates TLS itself but knows only `disable`, `prefer` and `require`, and no
//! `sslrootcert`; it refuses URLs carrying the others. So both parameters are taken out of the
//! URL here ([`split_url`]), tokio-postgres is told only whether to negotiate, and the
//! certificate verifier chosen here applies libpq's rules:
//!
//! | sslmode | TLS | certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it; plain if the handshake fails | as `require` |
//! | `require` | always | not verified, unless a CA is given: then as `verify-ca` |
//! | `verify-ca` | always | chain verified against the CA, any host name |
//! | `verify-full` | always | chain verified against the CA, and valid for the host |

use std::fmt;
use std::future::Future;
use std::io;
use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::CharIndices;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::error::{Error, Result};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(value: &str) -> Result<SslMode> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::DatabaseTls(format!(
                    "sslmode={other} in the database URL: expected disable, prefer, require, \
                     verify-ca or verify-full"
                )))
            }
        })
    }

    /// What tokio-postgres is told: whether to negotiate; verifying is the connector's job.
    pub fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database URL with `sslmode` and `sslrootcert` taken out (the last one counts, as in
/// libpq), and the rest left verbatim for tokio-postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitUrl {
    pub rest: String,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
}

/// Splits a URL (`postgres://...?sslmode=...`) or a key/value string (`host=... sslmode=...`).
pub fn split_url(url: &str) -> Result<SplitUrl> {
    let (rest, taken) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        take_from_query(url)
    } else {
        take_from_key_values(url)
    };
    let mut split = SplitUrl {
        rest,
        sslmode: None,
        sslrootcert: None,
    };
    for (key, value) in taken {
        if key == "sslmode" {
            split.sslmode = Some(SslMode::parse(&value)?);
        } else {
            split.sslrootcert = Some(value);
        }
    }
    Ok(split)
}

fn is_taken(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert"
}

fn decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// The query starts at the first `?` after the credentials (up to the first `@`), where
/// tokio-postgres looks for it.
fn take_from_query(url: &str) -> (String, Vec<(String, String)>) {
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(question) = url[after_credentials..]
        .find('?')
        .map(|q| q + after_credentials)
    else {
        return (url.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in url[question + 1..].split('&') {
        match param.split_once('=') {
            Some((key, value)) if is_taken(&decode(key)) => {
                taken.push((decode(key), decode(value)))
            }
            _ => kept.push(param),
        }
    }
    let mut rest = url[..question].to_string();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    (rest, taken)
}

/// Key/value pairs as libpq writes them: `key = value`, the value bare or in single quotes,
/// with backslash escapes. Past anything malformed the string is left as it is, for
/// tokio-postgres to report.
fn take_from_key_values(s: &str) -> (String, Vec<(String, String)>) {
    let mut rest = String::new();
    let mut taken = Vec::new();
    let mut kept_from = 0;
    let mut chars = s.char_indices().peekable();
    let skip_ws = |chars: &mut Peekable<CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_ws(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            break;
        }
        skip_ws(&mut chars);
        let mut value = String::new();
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut closed = !quoted;
        while let Some((_, c)) = chars.next_if(|(_, c)| quoted || !c.is_whitespace()) {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            break;
        }
        if is_taken(&key) {
            rest.push_str(&s[kept_from..start]);
            skip_ws(&mut chars);
            kept_from = chars.peek().map_or(s.len(), |&(i, _)| i);
            taken.push((key, value));
        }
    }
    rest.push_str(&s[kept_from..]);
    (rest, taken)
}

/// How the sink's connections do TLS: the mode, the CA (if any) and the rustls connector.
#[derive(Clone)]
pub struct Tls {
    pub mode: SslMode,
    connector: MakeRustlsConnect,
}

impl Tls {
    /// `ca` is the URL's `sslrootcert` if it has one, else `--database-ca-file`. Fails if the
    /// mode needs a CA and none is given, or the CA file cannot be read.
    pub fn new(mode: SslMode, ca: Option<PathBuf>) -> Result<Tls> {
        if ca.as_deref() == Some(Path::new("system")) {
            return Err(Error::DatabaseTls(
                "sslrootcert=system is not supported: give the CA file's path".into(),
            ));
        }
        let roots = ca.as_deref().map(read_roots).transpose()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(Error::DatabaseTls(format!(
                    "sslmode={mode} needs the CA that signed the server's certificate: \
                     sslrootcert=PATH in the database URL or --database-ca-file"
                )))
            }
            (SslMode::VerifyFull, Some(roots)) => {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| Error::DatabaseTls(format!("the database CA: {e}")))?
            }
            (_, roots) => Arc::new(NameUnchecked {
                roots: roots.map(Arc::new),
                provider: provider.clone(),
            }),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::DatabaseTls(format!("TLS settings: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        let connector = MakeRustlsConnect {
            config: Arc::new(config),
            ca,
        };
        Ok(Tls { mode, connector })
    }

    pub fn connector(&self) -> MakeRustlsConnect {
        self.connector.clone()
    }

    /// Whether a failed connection attempt failed in the TLS handshake itself (not the
    /// server refusing TLS, nor anything after): `prefer` then tries without TLS.
    pub fn handshake_failed(error: &tokio_postgres::Error) -> bool {
        std::error::Error::source(error).is_some_and(|e| e.is::<HandshakeError>())
    }
}

fn read_roots(path: &Path) -> Result<RootCertStore> {
    let unreadable = |reason: String| Error::ReadDatabaseCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(e.to_string()))? {
        let cert = cert.map_err(|e| unreadable(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| unreadable(format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(unreadable("no PEM certificate in it".into()));
    }
    Ok(roots)
}

/// The handshake signature checks of a [`ServerCertVerifier`], one a TLS version: each is
/// rustls' own function of the method's name, with the provider's algorithms.
macro_rules! signature_checks {
    ($($verify:ident),*) => {
        $(
            fn $verify(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                $verify(
                    message,
                    cert,
                    dss,
                    &self.provider.signature_verification_algorithms,
                )
            }
        )*
    };
}

/// `verify-ca`, and `require` with a CA: the chain must end at the CA; `require` (and `prefer`)
/// without a CA: encrypted, the certificate taken as it comes. The name is not checked; the
/// handshake's signatures are.
#[derive(Debug)]
struct NameUnchecked {
    roots: Option<Arc<RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NameUnchecked {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    signature_checks!(verify_tls12_signature, verify_tls13_signature);

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Makes one [`RustlsConnect`] per host tokio-postgres connects to.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
    ca: Option<PathBuf>,
}

impl MakeTlsConnect<Socket> for MakeRustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = HandshakeError;

    /// `host` is empty for a Unix socket, where the server declines TLS before it is used.
    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, HandshakeError> {
        Ok(RustlsConnect {
            config: self.config.clone(),
            ca: self.ca.clone(),
            host: host.to_string(),
        })
    }
}

pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    ca: Option<PathBuf>,
    host: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, HandshakeError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.host.clone()).map_err(|e| HandshakeError {
                reason: format!("{:?} is not a host name TLS can verify: {e}", self.host),
            })?;
            let connector = tokio_rustls::TlsConnector::from(self.config);
            connector
                .connect(name, socket)
                .await
                .map(RustlsStream)
                .map_err(|error| HandshakeError::new(&error, self.ca.as_deref()))
        })
    }
}

/// Why the TLS handshake with the server failed.
#[derive(Debug)]
pub struct HandshakeError {
    reason: String,
}

impl HandshakeError {
    fn new(error: &io::Error, ca: Option<&Path>) -> HandshakeError {
        let certificate = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
            .and_then(|e| match e {
                rustls::Error::InvalidCertificate(c) => Some(c),
                _ => None,
            });
        let reason = match (certificate, ca) {
            (
                Some(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ),
                _,
            ) => format!("the server's certificate is not valid for the host name: {error}"),
            (Some(_), Some(ca)) => format!(
                "the server's certificate did not verify against the CA in {}: {error}",
                ca.display()
            ),
            _ => error.to_string(),
        };
        HandshakeError { reason }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for HandshakeError {}

/// A TLS connection to the server. No channel binding is offered: SCRAM authenticates without.
pub struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: a URL, and what `split_url` leaves of it, its sslmode and its sslrootcert.
    fn assert_splits(cases: &[(&str, &str, Option<SslMode>, Option<&str>)]) {
        for &(url, rest, sslmode, sslrootcert) in cases {
            let split = split_url(url).unwrap();
            assert_eq!(
                (
                    split.rest.as_str(),
                    split.sslmode,
                    split.sslrootcert.as_deref()
                ),
                (rest, sslmode, sslrootcert),
                "{url}"
            );
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_a_urls_query_and_the_rest_kept() {
        use SslMode::*;
        assert_splits(&[
            (
                "postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
                "postgres://u:p@db:5432/app?application_name=x",
                Some(VerifyFull),
                Some("/etc/ca.pem"),
            ),
            ("postgresql://db/app?sslmode=require", "postgresql://db/app", Some(Require), None),
            ("postgres://db/app", "postgres://db/app", None, None),
            // A `?` in the password is not the query.
            (
                "postgres://u:a?b@db/app?sslmode=disable&sslmode=verify-ca",
                "postgres://u:a?b@db/app",
                Some(VerifyCa),
                None,
            ),
        ]);
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_key_value_pairs_quoted_or_not() {
        use SslMode::*;
        assert_splits(&[
            (
                "host=db sslmode=verify-ca user=u sslrootcert = '/a b/ca.pem' dbname=app",
                "host=db user=u dbname=app",
                Some(VerifyCa),
                Some("/a b/ca.pem"),
            ),
            (
                r"password='a b\' c' sslmode=require",
                r"password='a b\' c' ",
                Some(Require),
                None,
            ),
            (
                r"sslmode=prefer password=a\ b",
                r"password=a\ b",
                Some(Prefer),
                None,
            ),
        ]);
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let error = split_url("postgres://db/app?sslmode=allow").unwrap_err();
        assert!(error.to_string().contains("sslmode=allow"), "{error}");
    }

    #[test]
    fn the_verifying_modes_need_a_ca_and_a_ca_file_must_hold_certificates() {
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let error = Tls::new(mode, None).err().unwrap().to_string();
            assert!(
                error.contains(mode.as_str()) && error.contains("sslrootcert"),
                "{error}"
            );
        }
        assert!(Tls::new(SslMode::Require, None).is_ok());
        let empty = tempfile::NamedTempFile::new().unwrap();
        let error = Tls::new(SslMode::VerifyFull, Some(empty.path().to_path_buf()))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
    }
}
