//! TLS for the simulator's broker connection (`--ca-file`): rustls through
//! tokio-rustls, verifying the broker's certificate against the given CA and
//! the `--broker` host name. On a device, TLS belongs to its [`Transport`]
//! (e.g. embedded-tls over the modem socket); the MQTT state machine does not
//! change.
//!
//! [`Transport`]: coldchain_firmware::uplink::mqtt::Transport

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A TLS client set up for one broker.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("name", &self.name).finish()
    }
}

impl Tls {
    /// Trusts the CA certificates in the PEM file `ca` and expects the broker
    /// to present a certificate for `host`.
    pub fn new(ca: &Path, host: &str) -> anyhow::Result<Tls> {
        let pem = std::fs::read(ca)
            .with_context(|| format!("--ca-file: cannot read {}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        let mut n = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.with_context(|| format!("--ca-file {}: bad PEM", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("--ca-file {}: not a CA certificate", ca.display()))?;
            n += 1;
        }
        if n == 0 {
            bail!(
                "--ca-file {}: no certificate found (expected PEM, -----BEGIN CERTIFICATE-----)",
                ca.display()
            );
        }
        let cfg = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_string())
            .with_context(|| format!("--broker host {host:?} is not a valid TLS server name"))?;
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(cfg)),
            name,
        })
    }

    /// The TLS handshake over `tcp`.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}
