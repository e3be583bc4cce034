//! Mutual TLS 1.3 for the migration connection (rustls, ring provider).
//!
//! A TLS directory holds three PEM files: `ca.pem` (the CA both hosts trust), `cert.pem`
//! (this host's certificate chain, leaf first) and `key.pem` (its private key). The
//! source verifies the destination's certificate against the host it dialled (DNS
//! name or IP address SAN); the destination accepts only a client certificate that
//! chains to the same CA. Only TLS 1.3 is offered.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// File names inside a TLS directory.
pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration from {dir}: {reason}")]
    Config { dir: PathBuf, reason: String },
    #[error("`{0}` has no host name or IP address to verify the destination's certificate against")]
    BadServerName(String),
}

/// The CA, certificate chain and key read from a TLS directory.
pub struct TlsIdentity {
    dir: PathBuf,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsIdentity").field("dir", &self.dir).field("chain_len", &self.chain.len()).finish()
    }
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_path_buf(), reason: reason.to_string() }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no certificate"));
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsIdentity {
    /// Reads `ca.pem`, `cert.pem` and `key.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        if !dir.is_dir() {
            return Err(TlsError::Config { dir: dir.to_path_buf(), reason: "not a directory".into() });
        }
        let ca_path = dir.join(CA_FILE);
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&ca_path)? {
            roots.add(ca).map_err(|e| file_error(&ca_path, format!("unusable CA certificate ({e})")))?;
        }
        let chain = read_certs(&dir.join(CERT_FILE))?;
        let key_path = dir.join(KEY_FILE);
        let key_pem = std::fs::read(&key_path).map_err(|e| file_error(&key_path, e))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| file_error(&key_path, format!("no PEM private key ({e})")))?;
        Ok(Self { dir: dir.to_path_buf(), roots: Arc::new(roots), chain, key })
    }

    fn config_error(&self, reason: impl std::fmt::Display) -> TlsError {
        TlsError::Config { dir: self.dir.clone(), reason: reason.to_string() }
    }

    /// The source's side: presents this host's certificate, trusts only the CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| self.config_error(e))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| self.config_error(e))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| self.config_error(format!("certificate and key do not fit together: {e}")))?;
        Ok(Arc::new(config))
    }

    /// The destination's side: presents this host's certificate, requires a client
    /// certificate that chains to the CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| self.config_error(e))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| self.config_error(e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| self.config_error(format!("certificate and key do not fit together: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// The host part of `HOST:PORT` (`[v6]:port` too), as the name the destination's
/// certificate must carry.
pub fn server_name(to: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match to.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(h, _)| h),
        None => to.rsplit_once(':').map(|(h, _)| h),
    }
    .filter(|h| !h.is_empty())
    .ok_or_else(|| TlsError::BadServerName(to.to_string()))?;
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadServerName(to.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_from_addresses() {
        assert_eq!(server_name("127.0.0.1:7000").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
        assert_eq!(server_name("dest.example:7000").unwrap(), ServerName::try_from("dest.example").unwrap());
        assert_eq!(server_name("[::1]:7000").unwrap(), ServerName::try_from("::1").unwrap());
        assert!(server_name(":7000").is_err());
        assert!(server_name("nocolon").is_err());
        assert!(server_name("bad name!:1").is_err());
    }

    #[test]
    fn missing_or_bad_files_name_the_file() {
        let dir = std::env::temp_dir().join(format!("tern-tls-test-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let e = TlsIdentity::load(&dir).unwrap_err().to_string();
        assert!(e.contains("ca.pem"), "{e}");
        std::fs::write(dir.join(CA_FILE), "not pem").unwrap();
        let e = TlsIdentity::load(&dir).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("no certificate"), "{e}");
        let e = TlsIdentity::load(&dir.join("nope")).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
