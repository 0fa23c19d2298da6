//! `snakemq certs`: a local certificate authority and one certificate per peer, for trying
//! TLS, mutual TLS and QUIC on one machine (`cargo xtask certs` runs this).
//!
//! Every peer certificate carries the peer's name (so identity binding accepts that peer's
//! IDENTIFICATION) plus the addresses `127.0.0.1` and `::1` (so a connector verifying a
//! loopback server accepts it; connect to `127.0.0.1:PORT`, not `localhost:PORT`). The name
//! `localhost` is left out on purpose: a DNS name in a certificate is also an identity its
//! holder may claim. Nothing here is meant for production: the CA key is written
//! next to the certificates, unencrypted.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::common::CliError;

/// Arguments of `snakemq certs`.
#[derive(Debug, clap::Args)]
pub(crate) struct CertsArgs {
    /// Folder to write the PEM files into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "certs")]
    out: PathBuf,
    /// Peer names to make certificates for.
    #[arg(value_name = "NAME", default_values_t = ["alice".to_owned(), "bob".to_owned()])]
    names: Vec<String>,
}

/// Addresses every peer certificate carries besides the peer's own name.
const LOOPBACK_NAMES: [&str; 2] = ["127.0.0.1", "::1"];

pub(crate) fn run(args: CertsArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("{}: cannot create the folder: {e}", args.out.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "snakemq local CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(&args.out, "ca.pem", &ca_cert.pem())?;
    write(&args.out, "ca-key.pem", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    for name in &args.names {
        let key = KeyPair::generate()?;
        let mut sans = vec![name.clone()];
        sans.extend(LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(sans)
            .map_err(|e| format!("{name:?} cannot be a certificate name: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &issuer)?;
        write(&args.out, &format!("{name}.pem"), &cert.pem())?;
        write(&args.out, &format!("{name}-key.pem"), &key.serialize_pem())?;
    }

    let dir = args.out.display();
    println!("wrote {dir}/ca.pem (+ ca-key.pem) and, for each peer, NAME.pem + NAME-key.pem");
    if let [first, second, ..] = args.names.as_slice() {
        println!("try mutual TLS on loopback:");
        println!(
            "  snakemq listen --ident {first} --bind 127.0.0.1:4000 --tls-cert {dir}/{first}.pem \
             --tls-key {dir}/{first}-key.pem --tls-ca {dir}/ca.pem"
        );
        println!(
            "  snakemq send --ident {second} --connect 127.0.0.1:4000 --to {first} --tls-cert \
             {dir}/{second}.pem --tls-key {dir}/{second}-key.pem --tls-ca {dir}/ca.pem hello"
        );
        println!("(add --quic to both for QUIC)");
    }
    Ok(())
}

fn write(dir: &Path, file: &str, pem: &str) -> Result<(), CliError> {
    let path = dir.join(file);
    std::fs::write(&path, pem).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    Ok(())
}
