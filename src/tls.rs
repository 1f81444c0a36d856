//! The TLS options of the manager's servers (`--tls-min-version`, `--tls-cipher-suites`), as
//! Cluster API's `util/flags/manager.go` (v1.14.0) gives them to CAPD's webhook server and its
//! secure diagnostics server.
//!
//! The flags accept exactly what CAPI accepts (k8s.io/component-base `cli/flag`
//! `ciphersuites_flag.go`, v0.36.3): the version names `VersionTLS10` to `VersionTLS13` and the
//! cipher suite names Go's `crypto/tls` knows. Where rustls (with *ring*) differs from Go:
//!
//! - rustls implements TLS 1.2 and 1.3 only. `VersionTLS10` and `VersionTLS11` are accepted, as
//!   CAPI accepts them, and the servers then accept TLS 1.2 and 1.3 ([`TlsOptions::notes`] says
//!   so, for the manager to log).
//! - A cipher suite Go knows but rustls does not implement (the CBC, RC4, 3DES and static-RSA
//!   suites) is refused, naming it and the supported ones.
//! - As in Go, TLS 1.3 suites are not configurable: the list selects TLS 1.2 suites only, TLS 1.3
//!   names in it are accepted and change nothing, and all TLS 1.3 suites stay enabled. A list
//!   without a TLS 1.2 suite leaves TLS 1.2 clients without a common suite, as in Go.
//! - Without `--tls-cipher-suites`, rustls's defaults are served (the ECDHE AEAD suites), where
//!   Go's defaults also include ECDHE CBC suites.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, SupportedCipherSuite};

/// A `--tls-min-version` value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// `VersionTLS10`: accepted, served as TLS 1.2+ (rustls has no TLS 1.0).
    Tls10,
    /// `VersionTLS11`: accepted, served as TLS 1.2+ (rustls has no TLS 1.1).
    Tls11,
    /// `VersionTLS12`, the default.
    #[default]
    Tls12,
    /// `VersionTLS13`.
    Tls13,
}

impl TlsVersion {
    /// The flag values, in component-base's (sorted) order.
    pub const NAMES: [&'static str; 4] = [
        "VersionTLS10",
        "VersionTLS11",
        "VersionTLS12",
        "VersionTLS13",
    ];

    /// The flag value naming this version.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tls10 => Self::NAMES[0],
            Self::Tls11 => Self::NAMES[1],
            Self::Tls12 => Self::NAMES[2],
            Self::Tls13 => Self::NAMES[3],
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TlsVersion {
    type Err = String;

    /// Parses as component-base's `TLSVersion`: an empty value is the default (TLS 1.2).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Ok(Self::default()),
            "VersionTLS10" => Ok(Self::Tls10),
            "VersionTLS11" => Ok(Self::Tls11),
            "VersionTLS12" => Ok(Self::Tls12),
            "VersionTLS13" => Ok(Self::Tls13),
            other => Err(format!(
                "unknown tls version {other:?} (possible values: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The cipher suite names Go's `crypto/tls` knows (`tls.CipherSuites()` then
/// `tls.InsecureCipherSuites()`, Go 1.26) and their IANA values, plus component-base's two
/// legacy ChaCha20 names; component-base accepts exactly these.
const GO_CIPHER_SUITES: &[(&str, u16)] = &[
    ("TLS_AES_128_GCM_SHA256", 0x1301),
    ("TLS_AES_256_GCM_SHA384", 0x1302),
    ("TLS_CHACHA20_POLY1305_SHA256", 0x1303),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", 0xc009),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", 0xc00a),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", 0xc013),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", 0xc014),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", 0xcca8),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", 0xcca9),
    ("TLS_RSA_WITH_RC4_128_SHA", 0x0005),
    ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", 0x000a),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", 0x002f),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", 0x0035),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", 0x003c),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", 0x009c),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", 0x009d),
    ("TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xc007),
    ("TLS_ECDHE_RSA_WITH_RC4_128_SHA", 0xc011),
    ("TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", 0xc012),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", 0xc023),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", 0xc027),
];

/// The crypto provider every server of the manager uses.
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn implemented(id: u16) -> Option<SupportedCipherSuite> {
    provider()
        .cipher_suites
        .into_iter()
        .find(|suite| u16::from(suite.suite()) == id)
}

/// The cipher suite names capd-rs serves: the Go names of the provider's suites.
pub fn supported_cipher_suite_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = provider()
        .cipher_suites
        .iter()
        .filter_map(|suite| {
            let id = u16::from(suite.suite());
            GO_CIPHER_SUITES
                .iter()
                .find(|(_, known)| *known == id)
                .map(|(name, _)| *name)
        })
        .collect();
    names.sort_unstable();
    names
}

/// One `--tls-cipher-suites` entry: a Go cipher suite name that rustls implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CipherSuite {
    name: &'static str,
    id: u16,
    tls13: bool,
}

impl CipherSuite {
    /// The name as given (Go's name, or a legacy alias component-base accepts).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The IANA value.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Whether this is a TLS 1.3 suite (always enabled; naming it changes nothing).
    pub fn is_tls13(&self) -> bool {
        self.tls13
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl FromStr for CipherSuite {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some(&(name, id)) = GO_CIPHER_SUITES.iter().find(|(name, _)| *name == text) else {
            // component-base's message, then what capd-rs can serve.
            return Err(format!(
                "Cipher suite {text} not supported or doesn't exist (supported: {})",
                supported_cipher_suite_names().join(", ")
            ));
        };
        let suite = implemented(id).ok_or_else(|| {
            format!(
                "cipher suite {name} is known to Go but not implemented by capd-rs (rustls with \
                 ring); supported: {}",
                supported_cipher_suite_names().join(", ")
            )
        })?;
        Ok(Self {
            name,
            id,
            tls13: suite.tls13().is_some(),
        })
    }
}

/// A `--tls-cipher-suites` value: comma-separated names, as pflag's string slice reads it
/// (names are not trimmed; an empty value is an empty list, meaning the defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CipherSuites(pub Vec<CipherSuite>);

impl FromStr for CipherSuites {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Ok(Self::default());
        }
        text.split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// The TLS settings of every TLS server of the manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// The lowest protocol version offered (rustls never goes below TLS 1.2).
    pub min_version: TlsVersion,
    /// The cipher suites; empty means rustls's defaults. Only TLS 1.2 suites are selected by it.
    pub cipher_suites: Vec<CipherSuite>,
}

impl TlsOptions {
    /// The options of `min_version` and the suites of every `--tls-cipher-suites` occurrence
    /// (pflag appends repeated occurrences).
    pub fn new(
        min_version: TlsVersion,
        cipher_suites: impl IntoIterator<Item = CipherSuites>,
    ) -> Self {
        Self {
            min_version,
            cipher_suites: cipher_suites.into_iter().flat_map(|s| s.0).collect(),
        }
    }

    /// What these options mean that differs from how they read, for the manager to log once.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.min_version < TlsVersion::Tls12 {
            notes.push(format!(
                "--tls-min-version={} is accepted as CAPD accepts it, but capd-rs (rustls) \
                 implements TLS 1.2 and 1.3 only: older clients are refused",
                self.min_version
            ));
        }
        if self.cipher_suites.is_empty() {
            return notes;
        }
        if self.min_version == TlsVersion::Tls13 {
            notes.push(
                "--tls-cipher-suites has no effect with --tls-min-version=VersionTLS13: TLS 1.3 \
                 cipher suites are not configurable (as in Go)"
                    .to_owned(),
            );
            return notes;
        }
        let tls13: Vec<&str> = self
            .cipher_suites
            .iter()
            .filter(|s| s.is_tls13())
            .map(CipherSuite::name)
            .collect();
        if !tls13.is_empty() {
            notes.push(format!(
                "--tls-cipher-suites names TLS 1.3 suites ({}): TLS 1.3 cipher suites are not \
                 configurable (as in Go), all of them stay enabled",
                tls13.join(", ")
            ));
        }
        if self.cipher_suites.iter().all(CipherSuite::is_tls13) {
            notes.push(
                "--tls-cipher-suites names no TLS 1.2 suite: TLS 1.2 clients find no common \
                 cipher suite (as in Go)"
                    .to_owned(),
            );
        }
        notes
    }

    /// The cipher suites served, in the provider's order of preference: every TLS 1.3 suite,
    /// and the TLS 1.2 suites listed (all when none are listed).
    fn suites(&self) -> Vec<SupportedCipherSuite> {
        provider()
            .cipher_suites
            .into_iter()
            .filter(|suite| {
                suite.tls13().is_some()
                    || self.cipher_suites.is_empty()
                    || self
                        .cipher_suites
                        .iter()
                        .any(|listed| listed.id == u16::from(suite.suite()))
            })
            .collect()
    }

    /// A server configuration serving `certs` (leaf first) with `key` under these options,
    /// offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(
        &self,
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: self.suites(),
            ..provider()
        };
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, ProtocolVersion, ServerConnection};

    #[test]
    fn versions_parse_as_component_base_does() {
        assert_eq!("".parse(), Ok(TlsVersion::Tls12));
        assert_eq!("VersionTLS10".parse(), Ok(TlsVersion::Tls10));
        assert_eq!("VersionTLS11".parse(), Ok(TlsVersion::Tls11));
        assert_eq!("VersionTLS12".parse(), Ok(TlsVersion::Tls12));
        assert_eq!("VersionTLS13".parse(), Ok(TlsVersion::Tls13));
        assert_eq!(TlsOptions::default().min_version, TlsVersion::Tls12);
        for bad in [
            "VersionTLS_DOES_NOT_EXIST",
            "versiontls12",
            "TLS1.2",
            " VersionTLS12",
        ] {
            let err = bad.parse::<TlsVersion>().unwrap_err();
            assert!(
                err.starts_with(&format!("unknown tls version {bad:?}")),
                "{err}"
            );
            assert!(err.contains("VersionTLS10, VersionTLS11, VersionTLS12, VersionTLS13"));
        }
        for name in TlsVersion::NAMES {
            assert_eq!(name.parse::<TlsVersion>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn every_ring_suite_has_a_go_name_and_parses() {
        let names = supported_cipher_suite_names();
        assert_eq!(names.len(), provider().cipher_suites.len(), "{names:?}");
        for name in names {
            let suite: CipherSuite = name.parse().unwrap();
            assert_eq!(suite.name(), name);
        }
        let legacy: CipherSuite = "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".parse().unwrap();
        assert_eq!(legacy.id(), 0xcca8);
        assert!(!legacy.is_tls13());
        assert!(
            "TLS_AES_256_GCM_SHA384"
                .parse::<CipherSuite>()
                .unwrap()
                .is_tls13()
        );
    }

    #[test]
    fn unknown_and_unimplemented_suites_are_refused_with_the_supported_list() {
        let err = "TLS_DOES_NOT_EXIST".parse::<CipherSuite>().unwrap_err();
        assert!(
            err.starts_with("Cipher suite TLS_DOES_NOT_EXIST not supported or doesn't exist"),
            "{err}"
        );
        for go_only in [
            "TLS_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
            "TLS_RSA_WITH_RC4_128_SHA",
        ] {
            let err = go_only.parse::<CipherSuite>().unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "cipher suite {go_only} is known to Go but not implemented"
                )),
                "{err}"
            );
            assert!(
                err.contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
                "{err}"
            );
        }
    }

    #[test]
    fn suite_lists_split_on_commas_like_pflag() {
        assert_eq!("".parse::<CipherSuites>().unwrap(), CipherSuites::default());
        let list: CipherSuites = "TLS_AES_256_GCM_SHA384,TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            .parse()
            .unwrap();
        let names: Vec<&str> = list.0.iter().map(CipherSuite::name).collect();
        assert_eq!(
            names,
            [
                "TLS_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        // Not trimmed, and an empty entry is an unknown name, as component-base reads them.
        assert!(
            "TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256"
                .parse::<CipherSuites>()
                .is_err()
        );
        assert!("TLS_AES_256_GCM_SHA384,".parse::<CipherSuites>().is_err());
        // Repeated flags append.
        let options = TlsOptions::new(TlsVersion::Tls12, [list.clone(), list]);
        assert_eq!(options.cipher_suites.len(), 4);
    }

    #[test]
    fn notes_explain_what_rustls_and_go_do_differently() {
        assert!(TlsOptions::default().notes().is_empty());
        let parse = |v: &str, s: &str| TlsOptions::new(v.parse().unwrap(), [s.parse().unwrap()]);
        let notes = parse("VersionTLS10", "").notes();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("TLS 1.2 and 1.3 only"), "{notes:?}");
        let notes = parse("VersionTLS13", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256").notes();
        assert!(
            notes[0].contains("no effect with --tls-min-version=VersionTLS13"),
            "{notes:?}"
        );
        let notes = parse("VersionTLS12", "TLS_AES_256_GCM_SHA384").notes();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("TLS_AES_256_GCM_SHA384"));
        assert!(notes[1].contains("no TLS 1.2 suite"));
        assert!(
            parse("VersionTLS12", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
                .notes()
                .is_empty()
        );
    }

    fn self_signed() -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }

    /// A client trusting anything, offering `versions` and, when given, only `suite`.
    fn client(
        versions: &[&'static rustls::SupportedProtocolVersion],
        suite: Option<rustls::CipherSuite>,
    ) -> Arc<ClientConfig> {
        let mut provider = provider();
        if let Some(suite) = suite {
            provider.cipher_suites.retain(|s| s.suite() == suite);
        }
        let provider = Arc::new(provider);
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        Arc::new(config)
    }

    #[derive(Debug)]
    struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// Runs a handshake in memory; the negotiated version and suite, or the first error.
    fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Result<(ProtocolVersion, rustls::CipherSuite), rustls::Error> {
        let mut server = ServerConnection::new(server)?;
        let mut client = ClientConnection::new(client, ServerName::try_from("localhost").unwrap())?;
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut buf.as_slice()).unwrap();
            let server_result = server.process_new_packets();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            server_result?;
            client.read_tls(&mut buf.as_slice()).unwrap();
            client.process_new_packets()?;
        }
        let version = client
            .protocol_version()
            .ok_or(rustls::Error::HandshakeNotComplete)?;
        let suite = client
            .negotiated_cipher_suite()
            .ok_or(rustls::Error::HandshakeNotComplete)?;
        Ok((version, suite.suite()))
    }

    fn server(min: &str, suites: &str) -> Arc<ServerConfig> {
        let (certs, key) = self_signed();
        TlsOptions::new(min.parse().unwrap(), [suites.parse().unwrap()])
            .server_config(certs, key)
            .unwrap()
    }

    use rustls::version::{TLS12, TLS13};

    #[test]
    fn the_default_serves_tls13_and_tls12_with_alpn() {
        let server = server("", "");
        assert_eq!(
            server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let (version, _) = handshake(server.clone(), client(&[&TLS13, &TLS12], None)).unwrap();
        assert_eq!(version, ProtocolVersion::TLSv1_3);
        let (version, _) = handshake(server, client(&[&TLS12], None)).unwrap();
        assert_eq!(version, ProtocolVersion::TLSv1_2);
    }

    #[test]
    fn tls13_minimum_refuses_tls12_clients() {
        let server = server("VersionTLS13", "");
        assert!(handshake(server.clone(), client(&[&TLS12], None)).is_err());
        assert!(handshake(server, client(&[&TLS13], None)).is_ok());
    }

    #[test]
    fn old_minimums_serve_tls12() {
        let (version, _) = handshake(server("VersionTLS10", ""), client(&[&TLS12], None)).unwrap();
        assert_eq!(version, ProtocolVersion::TLSv1_2);
    }

    #[test]
    fn listed_suites_restrict_tls12_only() {
        use rustls::CipherSuite as Cs;
        let server = server(
            "VersionTLS12",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        );
        let chacha = Cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
        let aes = Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
        assert_eq!(
            handshake(server.clone(), client(&[&TLS12], Some(chacha))).unwrap(),
            (ProtocolVersion::TLSv1_2, chacha)
        );
        assert!(handshake(server.clone(), client(&[&TLS12], Some(aes))).is_err());
        // TLS 1.3 suites are not configurable: every one of them is still served.
        for suite in [
            Cs::TLS13_AES_128_GCM_SHA256,
            Cs::TLS13_AES_256_GCM_SHA384,
            Cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            assert_eq!(
                handshake(server.clone(), client(&[&TLS13], Some(suite))).unwrap(),
                (ProtocolVersion::TLSv1_3, suite)
            );
        }
    }

    #[test]
    fn only_tls13_names_leave_tls12_clients_without_a_suite() {
        let server = server("VersionTLS12", "TLS_AES_256_GCM_SHA384");
        assert!(handshake(server.clone(), client(&[&TLS12], None)).is_err());
        let (version, _) = handshake(server, client(&[&TLS13], None)).unwrap();
        assert_eq!(version, ProtocolVersion::TLSv1_3);
    }
}
