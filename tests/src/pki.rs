//! Certificates generated for a test: a CA, and leaf certificates it signs
//! (or that another CA signs, or that have expired), written as PEM files.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// PEM files of one certificate and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

/// A certificate authority whose certificate is at `certificate`.
#[derive(Debug)]
pub struct Ca {
    pub certificate: PathBuf,
    dir: PathBuf,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// How a leaf certificate should be made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Validity {
    /// Valid from yesterday for a year.
    #[default]
    Current,
    /// Expired last year.
    Expired,
}

impl Ca {
    /// A new CA called `name`, writing its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let certificate = dir.join(format!("{name}.crt"));
        std::fs::write(&certificate, issuer.pem())
            .with_context(|| format!("writing {}", certificate.display()))?;
        Ok(Self {
            certificate,
            dir: dir.to_owned(),
            issuer,
        })
    }

    /// A certificate for `file_stem` with common name `names[0]` and every
    /// entry of `names` as a subject alternative name (IP addresses become
    /// IP SANs), usable for both TLS servers and clients.
    pub fn leaf(
        &self,
        file_stem: &str,
        names: &[&str],
        validity: Validity,
    ) -> anyhow::Result<Leaf> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let year = 2026;
        let (from, to) = match validity {
            Validity::Current => (
                rcgen::date_time_ymd(year - 1, 1, 1),
                rcgen::date_time_ymd(year + 10, 1, 1),
            ),
            Validity::Expired => (
                rcgen::date_time_ymd(year - 3, 1, 1),
                rcgen::date_time_ymd(year - 2, 1, 1),
            ),
        };
        params.not_before = from;
        params.not_after = to;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        let leaf = Leaf {
            certificate: self.dir.join(format!("{file_stem}.crt")),
            private_key: self.dir.join(format!("{file_stem}.key")),
        };
        std::fs::write(&leaf.certificate, certificate.pem())?;
        std::fs::write(&leaf.private_key, key.serialize_pem())?;
        Ok(leaf)
    }
}
