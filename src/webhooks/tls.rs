//! The webhook server's certificate (and the diagnostics server's, when given as files): loaded
//! from PEM files (cert-manager's Secret mount), served under the manager's [`TlsOptions`], and
//! reloaded without a restart when they change.
//!
//! Kubelet swaps a Secret volume's files through a `..data` symlink, which per-file watches
//! miss, so the files are polled: each tick reads both and, when their bytes differ from the
//! loaded pair, builds a new configuration and swaps it in. New handshakes use it; a broken pair
//! (half-written, mismatched) is logged and the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::tls::TlsOptions;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The PEM could not be parsed or holds nothing usable.
    #[error("{path} holds no usable PEM {what}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The certificate and key do not make a valid server configuration.
    #[error("the certificate {cert} and key {key} do not fit together: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's error.
        source: rustls::Error,
    },
}

/// The certificate and key files the server serves.
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// The PEM private key.
    pub key: PathBuf,
}

impl CertFiles {
    /// The files `cert_name` and `key_name` in `dir` (controller-runtime's layout).
    pub fn in_dir(dir: &Path, cert_name: &str, key_name: &str) -> Self {
        Self {
            cert: dir.join(cert_name),
            key: dir.join(key_name),
        }
    }

    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// A server configuration under `tls` for the pair in `cert_pem` and `key_pem`.
    fn server_config(
        &self,
        tls: &TlsOptions,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let pem_error = |path: &Path, what, message: String| TlsError::Pem {
            path: path.to_owned(),
            what,
            message,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_error(&self.cert, "certificate", e.to_string()))?;
        if certs.is_empty() {
            return Err(pem_error(
                &self.cert,
                "certificate",
                "no CERTIFICATE block".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| pem_error(&self.key, "private key", e.to_string()))?;
        tls.server_config(certs, key)
            .map_err(|source| TlsError::Config {
                cert: self.cert.clone(),
                key: self.key.clone(),
                source,
            })
    }
}

/// A served certificate that follows its files.
pub struct ReloadingCert {
    files: CertFiles,
    tls: TlsOptions,
    config: RustlsConfig,
    loaded: (Vec<u8>, Vec<u8>),
}

impl ReloadingCert {
    /// Loads the files, to serve them under `tls`; fails when they are missing or unusable.
    pub fn load(files: CertFiles, tls: TlsOptions) -> Result<Self, TlsError> {
        let loaded = files.read()?;
        let config = RustlsConfig::from_config(files.server_config(&tls, &loaded.0, &loaded.1)?);
        Ok(Self {
            files,
            tls,
            config,
            loaded,
        })
    }

    /// The configuration to serve with; reloads swap its content.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Reloads when the files changed; returns whether a new certificate is now served.
    pub fn reload_if_changed(&mut self) -> Result<bool, TlsError> {
        let current = self.files.read()?;
        if current == self.loaded {
            return Ok(false);
        }
        let config = self
            .files
            .server_config(&self.tls, &current.0, &current.1)?;
        self.config.reload_from_config(config);
        self.loaded = current;
        Ok(true)
    }

    /// Polls the files every `interval` until the task is dropped.
    pub async fn follow(mut self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.reload_if_changed() {
                Ok(true) => {
                    info!(cert = %self.files.cert.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "keeping the current serving certificate"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn write(dir: &Path, (cert, key): &(String, String)) {
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    #[test]
    fn missing_or_unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles::in_dir(dir.path(), "tls.crt", "tls.key");
        let err = ReloadingCert::load(files.clone(), TlsOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot read") && err.contains("tls.crt"),
            "{err}"
        );
        std::fs::write(dir.path().join("tls.crt"), "not pem").unwrap();
        std::fs::write(dir.path().join("tls.key"), "not pem").unwrap();
        let err = ReloadingCert::load(files, TlsOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("tls.crt holds no usable PEM certificate"),
            "{err}"
        );
    }

    #[test]
    fn reloads_only_on_change_and_keeps_serving_through_a_broken_pair() {
        let dir = tempfile::tempdir().unwrap();
        let files = CertFiles::in_dir(dir.path(), "tls.crt", "tls.key");
        let first = pair("first");
        write(dir.path(), &first);
        let mut cert = ReloadingCert::load(files, TlsOptions::default()).unwrap();
        assert!(
            !cert.reload_if_changed().unwrap(),
            "reloaded unchanged files"
        );

        let second = pair("second");
        write(dir.path(), &second);
        assert!(cert.reload_if_changed().unwrap());
        assert_eq!(
            cert.loaded,
            (second.0.clone().into_bytes(), second.1.clone().into_bytes())
        );

        // A half-rotated pair (new certificate, old key) is refused; the second pair stays.
        write(dir.path(), &(pair("third").0, second.1.clone()));
        let err = cert.reload_if_changed().unwrap_err().to_string();
        assert!(err.contains("do not fit together"), "{err}");
        assert_eq!(cert.loaded.0, second.0.into_bytes());
    }
}
