//! TLS for the listener (`ROXPI_TLS_CERT` / `ROXPI_TLS_KEY`): the
//! certificate chain and key, loaded from PEM into a rustls server
//! configuration (ring, the provider the upstream client uses), and
//! swapped whole on reload: new connections take the new one, open ones
//! keep theirs.
//!
//! A TLS connection is the same non-blocking socket with a
//! `rustls::ServerConnection` beside it (`conn::Io`): reads pull records
//! off the socket and hand plaintext to the request parser; writes give
//! plaintext to rustls only when its outgoing records are flushed, so that
//! it never holds more than one batch, and a full socket is `WouldBlock`
//! as for plain HTTP — the connection waits in the poller, not in a worker.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate files and the configuration made from them.
pub struct TlsCerts {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCerts")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TlsCerts {
    /// Loads `cert` (PEM chain, leaf first) and `key` (PEM PKCS#8, PKCS#1
    /// or SEC1); the error names the file and what is wrong.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<TlsCerts>, String> {
        Ok(Arc::new(TlsCerts {
            current: RwLock::new(build(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Reads both files again (SIGHUP); on an error the configuration in
    /// force stays.
    pub fn reload(&self) -> Result<(), String> {
        let new = build(&self.cert, &self.key)?;
        *crate::write(&self.current) = new;
        Ok(())
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&crate::read(&self.current))
    }

    /// A new server-side TLS session.
    pub(crate) fn session(&self) -> io::Result<rustls::ServerConnection> {
        rustls::ServerConnection::new(self.config()).map_err(io::Error::other)
    }
}

fn build(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ROXPI_TLS_CERT {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "ROXPI_TLS_CERT {}: no CERTIFICATE block",
            cert.display()
        ));
    }
    let key_path = key;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("ROXPI_TLS_KEY {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "ROXPI_TLS_CERT / ROXPI_TLS_KEY ({}, {}): {e}",
                cert.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes rustls's pending records to the socket; `WouldBlock` when the
/// socket took only part of them.
pub(crate) fn flush(
    tls: &mut rustls::ServerConnection,
    sock: &std::net::TcpStream,
) -> io::Result<()> {
    let mut s = sock;
    while tls.wants_write() {
        match tls.write_tls(&mut s) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
