//! Certificates from Kubernetes TLS Secrets: read and checked here, so that a broken Secret is
//! reported for itself and never reaches HAProxy. Guests see what a certificate is for (its
//! names, dates, issuer), never its key; the host writes the files HAProxy loads.
//!
//! A service names its Secret with `wasmconfd.io/tls-secret: NAME` (same namespace). Each
//! Secret named becomes one file, `certs/<namespace>_<secret>.pem` (chain, then key), and one
//! line of `certs/certificates.crtlist`, limited to the domains of its services that it covers.
//! Names no certificate is for get `certs/default.pem`: the operator's, or a self-signed one.

use crate::assemble::CERTS_DIR;
use crate::bindings::{Certificate, Service, Tls};
use crate::source::Problem;
use k8s_openapi::api::core::v1::Secret;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use x509_parser::prelude::*;

/// The annotation naming a service's TLS Secret.
pub const ANNOTATION: &str = "wasmconfd.io/tls-secret";
/// The crt-list file, in the certificates directory.
pub const CRT_LIST: &str = "certificates.crtlist";
/// The default certificate's file, in the certificates directory.
pub const DEFAULT_FILE: &str = "default.pem";
/// How long before its end a certificate is warned about.
pub const WARN_BEFORE_SECONDS: i64 = 14 * 24 * 3600;

/// A certificate and its key, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    pub sans: Vec<String>,
    pub subject: String,
    pub issuer: String,
    /// Lower-case hexadecimal.
    pub serial: String,
    pub not_before: i64,
    pub not_after: i64,
    pub key_type: String,
    /// What HAProxy loads: the certificate chain, then the key, PEM.
    pub pem: String,
}

/// Read a PEM certificate chain (leaf first) and its PEM private key, and check that they
/// belong together.
pub fn read(chain: &[u8], key: &[u8]) -> Result<KeyPair, String> {
    let certificates: Vec<_> = Pem::iter_from_buffer(chain)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not PEM: {e}"))?;
    let leaf = certificates
        .iter()
        .find(|pem| pem.label == "CERTIFICATE")
        .ok_or("tls.crt holds no CERTIFICATE block")?;
    let (_, leaf) = X509Certificate::from_der(&leaf.contents)
        .map_err(|e| format!("tls.crt: the first certificate does not parse: {e}"))?;
    let keys: Vec<_> = Pem::iter_from_buffer(key)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.key is not PEM: {e}"))?
        .into_iter()
        .filter(|pem| pem.label.ends_with("PRIVATE KEY"))
        .collect();
    let [key] = keys.as_slice() else {
        return Err(format!(
            "tls.key holds {} private keys, not one",
            keys.len()
        ));
    };
    let spki = leaf.public_key();
    let (kind, public) = private_key_public_part(&key.label, &key.contents)?;
    let cert_public: &[u8] = &spki.subject_public_key.data;
    if public != cert_public {
        return Err("tls.key is not the key of the certificate in tls.crt".into());
    }
    let mut sans = Vec::new();
    if let Ok(Some(names)) = leaf.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                GeneralName::DNSName(dns) => sans.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_text(bytes) {
                        sans.push(ip)
                    }
                }
                _ => {}
            }
        }
    }
    let pem: String = certificates
        .iter()
        .filter(|pem| pem.label == "CERTIFICATE")
        .chain([key])
        .map(pem_text)
        .collect();
    Ok(KeyPair {
        sans,
        subject: leaf.subject().to_string(),
        issuer: leaf.issuer().to_string(),
        serial: hex::encode(leaf.raw_serial())
            .trim_start_matches('0')
            .to_string(),
        not_before: leaf.validity().not_before.timestamp(),
        not_after: leaf.validity().not_after.timestamp(),
        key_type: key_type(spki, kind),
        pem,
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

/// The key's algorithm, and its public key as a certificate holds it.
fn private_key_public_part(label: &str, der: &[u8]) -> Result<(&'static str, Vec<u8>), String> {
    use ring::signature::KeyPair as _;
    let unsupported = || {
        format!(
            "tls.key ({label}) is not an RSA, ECDSA P-256/P-384 or Ed25519 private key that \
             wasmconfd can read"
        )
    };
    let ec = |point: Option<Vec<u8>>| point.ok_or_else(unsupported);
    match label {
        "RSA PRIVATE KEY" => ring::rsa::KeyPair::from_der(der)
            .map(|k| ("rsa", k.public_key().as_ref().to_vec()))
            .map_err(|e| format!("tls.key: a bad RSA key ({e})")),
        "EC PRIVATE KEY" => {
            use p384::elliptic_curve::sec1::ToEncodedPoint as _;
            let p256 = p256::SecretKey::from_sec1_der(der).ok().map(|k| {
                (
                    "ecdsa",
                    k.public_key().to_encoded_point(false).as_bytes().to_vec(),
                )
            });
            let p384 = || {
                p384::SecretKey::from_sec1_der(der).ok().map(|k| {
                    let point = k.public_key().to_encoded_point(false);
                    ("ecdsa", point.as_bytes().to_vec())
                })
            };
            let (kind, point) = p256.or_else(p384).ok_or_else(unsupported)?;
            Ok((kind, ec(Some(point))?))
        }
        "PRIVATE KEY" => {
            use p384::elliptic_curve::sec1::ToEncodedPoint as _;
            use p384::pkcs8::DecodePrivateKey as _;
            if let Ok(k) = ring::rsa::KeyPair::from_pkcs8(der) {
                return Ok(("rsa", k.public_key().as_ref().to_vec()));
            }
            if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
                return Ok((
                    "ecdsa",
                    k.public_key().to_encoded_point(false).as_bytes().to_vec(),
                ));
            }
            if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
                return Ok((
                    "ecdsa",
                    k.public_key().to_encoded_point(false).as_bytes().to_vec(),
                ));
            }
            if let Ok(k) = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                return Ok(("ed25519", k.public_key().as_ref().to_vec()));
            }
            Err(unsupported())
        }
        _ => Err(format!("tls.key holds a {label}, not a private key")),
    }
}

/// `rsa-2048`, `ecdsa-p256`, `ecdsa-p384`, `ed25519`.
fn key_type(spki: &SubjectPublicKeyInfo, kind: &str) -> String {
    match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(point)) => match point.key_size() {
            256 => "ecdsa-p256".into(),
            384 => "ecdsa-p384".into(),
            bits => format!("ecdsa-{bits}"),
        },
        _ => kind.to_string(),
    }
}

/// A PEM block as text, 64 characters a line.
fn pem_text(pem: &Pem) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&pem.contents);
    let mut text = format!("-----BEGIN {}-----\n", pem.label);
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {}-----\n", pem.label));
    text
}

/// Whether certificate name `san` (`shop.example.com`, `*.example.com`) covers `domain`
/// (`shop.example.com`, or a wildcard domain, which only the same wildcard covers).
pub fn covers(san: &str, domain: &str) -> bool {
    if san == domain {
        return true;
    }
    match (san.strip_prefix("*."), domain.split_once('.')) {
        (Some(parent), Some((label, rest))) => label != "*" && !label.is_empty() && rest == parent,
        _ => false,
    }
}

/// A certificate as a render uses it: for which services and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    pub namespace: String,
    pub secret: String,
    pub services: Vec<String>,
    pub domains: Vec<String>,
    pub pair: Arc<KeyPair>,
}

impl Used {
    /// The file's name in the certificates directory. Namespaces and Secret names are DNS
    /// labels and subdomains, so `_` keeps them apart.
    pub fn file_name(&self) -> String {
        format!("{}_{}.pem", self.namespace, self.secret)
    }

    /// What a guest sees.
    fn certificate(&self) -> Certificate {
        let pair = &self.pair;
        Certificate {
            namespace: self.namespace.clone(),
            secret: self.secret.clone(),
            services: self.services.clone(),
            domains: self.domains.clone(),
            sans: pair.sans.clone(),
            subject: pair.subject.clone(),
            issuer: pair.issuer.clone(),
            serial: pair.serial.clone(),
            not_before: pair.not_before,
            not_after: pair.not_after,
            key_type: pair.key_type.clone(),
            file: format!("{CERTS_DIR}/{}", self.file_name()),
        }
    }
}

/// The certificates of one render, and the default one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificates {
    pub default: Arc<KeyPair>,
    /// Sorted by namespace, then Secret.
    pub used: Vec<Used>,
}

impl Certificates {
    /// No certificate from a Secret, and a new self-signed default one.
    pub fn only_default() -> Result<Certificates, String> {
        Ok(Certificates {
            default: Arc::new(self_signed()?),
            used: Vec::new(),
        })
    }

    /// What a guest receiving `services` sees: the certificates of those services.
    pub fn for_services(&self, services: &[Arc<Service>]) -> Tls {
        let certificates = if self.used.is_empty() {
            Vec::new()
        } else {
            let names: std::collections::HashSet<(&str, &str)> = services
                .iter()
                .map(|s| (s.namespace.as_str(), s.name.as_str()))
                .collect();
            self.used
                .iter()
                .filter(|used| {
                    used.services
                        .iter()
                        .any(|s| names.contains(&(used.namespace.as_str(), s.as_str())))
                })
                .map(Used::certificate)
                .collect()
        };
        Tls {
            certificates,
            ..Tls::without_certificates()
        }
    }

    /// The files of the certificates directory: each certificate, the default one and the
    /// crt-list, as `(name, contents)` sorted by name.
    pub fn files(&self) -> Vec<(String, String)> {
        let mut files = vec![
            (DEFAULT_FILE.to_string(), self.default.pem.clone()),
            (CRT_LIST.to_string(), self.crt_list()),
        ];
        files.extend(
            self.used
                .iter()
                .map(|u| (u.file_name(), u.pair.pem.clone())),
        );
        files.sort();
        files
    }

    /// One line per certificate: its file, then the names it is presented for.
    pub fn crt_list(&self) -> String {
        self.used
            .iter()
            .map(crt_list_line)
            .collect::<Vec<_>>()
            .concat()
    }
}

impl Tls {
    /// No certificate from a Secret: the default one and an empty crt-list.
    pub fn without_certificates() -> Tls {
        Tls {
            default_certificate: format!("{CERTS_DIR}/{DEFAULT_FILE}"),
            crt_list: format!("{CERTS_DIR}/{CRT_LIST}"),
            certificates: Vec::new(),
        }
    }
}

/// `certs/<file> <domain>...`, a line of the crt-list.
pub fn crt_list_line(used: &Used) -> String {
    format!(
        "{CERTS_DIR}/{} {}\n",
        used.file_name(),
        used.domains.join(" ")
    )
}

/// The certificates of the services, kept between renders: a Secret is read again only when it
/// changed, and a Secret that turns bad keeps its last good certificate serving.
#[derive(Default)]
pub struct Kept {
    /// Each Secret as last read, and what reading it gave.
    read: HashMap<SecretName, (Arc<Secret>, Read)>,
    last_good: HashMap<SecretName, Arc<KeyPair>>,
}

/// (namespace, name).
type SecretName = (String, String);
/// A Secret's certificate, or why it has none.
type Read = Result<Arc<KeyPair>, String>;

impl Kept {
    /// The certificates `services` name, from `secrets`, checked at time `now` (seconds since
    /// the Unix epoch); what is wrong, for each Secret and service.
    pub fn build(
        &mut self,
        secrets: &[Arc<Secret>],
        services: &[Arc<Service>],
        default: &Arc<KeyPair>,
        now: i64,
    ) -> (Certificates, Vec<Problem>) {
        let mut problems = Vec::new();
        // (namespace, secret) -> services naming it.
        let mut named: BTreeMap<SecretName, Vec<&Service>> = BTreeMap::new();
        for service in services {
            if let Some((_, secret)) = service.annotations.iter().find(|(k, _)| k == ANNOTATION) {
                named
                    .entry((service.namespace.clone(), secret.trim().to_string()))
                    .or_default()
                    .push(service);
            }
        }
        let by_name: HashMap<(&str, &str), &Arc<Secret>> = secrets
            .iter()
            .map(|s| {
                let meta = &s.metadata;
                let key = (
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default(),
                );
                (key, s)
            })
            .collect();
        self.read.retain(|key, _| named.contains_key(key));
        self.last_good.retain(|key, _| named.contains_key(key));
        let mut used = Vec::new();
        for ((namespace, name), users) in named {
            let secret_id = format!("Secret {namespace}/{name}");
            let service_ids = || {
                users
                    .iter()
                    .map(|s| format!("Service {namespace}/{}", s.name))
                    .collect::<Vec<_>>()
            };
            let key = (namespace.clone(), name.clone());
            let Some(secret) = by_name.get(&(namespace.as_str(), name.as_str())) else {
                for service in service_ids() {
                    problems.push(Problem::part(
                        &service,
                        &format!(
                            "its TLS Secret {name} ({ANNOTATION}) is not there: its domains get \
                             the default certificate (wasmconfd reads Secrets with \
                             --tls-secrets; a snapshot holds them with --include-secrets)"
                        ),
                    ));
                }
                continue;
            };
            let read = match self.read.get(&key) {
                Some((seen, read)) if Arc::ptr_eq(seen, secret) => read.clone(),
                _ => {
                    let read = read_secret(secret).map(Arc::new);
                    self.read
                        .insert(key.clone(), (Arc::clone(secret), read.clone()));
                    read
                }
            };
            let pair = match read.and_then(|pair| valid_at(pair, now)) {
                Ok(pair) => {
                    self.last_good.insert(key.clone(), pair.clone());
                    pair
                }
                Err(reason) => match self.last_good.get(&key) {
                    Some(last) if valid_at(last.clone(), now).is_ok() => {
                        problems.push(Problem::part(
                            &secret_id,
                            &format!("{reason}; the certificate last read from it stays in use"),
                        ));
                        last.clone()
                    }
                    _ => {
                        problems.push(Problem::new(
                            &secret_id,
                            &format!(
                                "{reason}; the domains of {} get the default certificate",
                                service_ids().join(", ")
                            ),
                        ));
                        continue;
                    }
                },
            };
            if pair.not_after - now < WARN_BEFORE_SECONDS {
                problems.push(Problem::part(
                    &secret_id,
                    &format!(
                        "its certificate expires at {} (in less than 14 days): renew it",
                        timestamp(pair.not_after)
                    ),
                ));
            }
            let mut domains = Vec::new();
            for service in &users {
                let (covered, uncovered): (Vec<_>, Vec<_>) = service
                    .domains
                    .iter()
                    .partition(|d| pair.sans.iter().any(|san| covers(san, d)));
                if !uncovered.is_empty() {
                    problems.push(Problem::part(
                        &format!("Service {namespace}/{}", service.name),
                        &format!(
                            "the certificate of Secret {name} does not cover {} (it is for {}): \
                             those get the default certificate",
                            uncovered
                                .iter()
                                .map(|d| d.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                            pair.sans.join(", ")
                        ),
                    ));
                }
                domains.extend(covered.into_iter().cloned());
            }
            domains.sort();
            domains.dedup();
            if domains.is_empty() {
                continue;
            }
            used.push(Used {
                namespace,
                secret: name,
                services: users.iter().map(|s| s.name.clone()).collect(),
                domains,
                pair,
            });
        }
        let certificates = Certificates {
            default: default.clone(),
            used,
        };
        (certificates, problems)
    }
}

/// `pair`, if it is valid at `now`.
fn valid_at(pair: Arc<KeyPair>, now: i64) -> Result<Arc<KeyPair>, String> {
    if pair.not_after <= now {
        return Err(format!(
            "its certificate expired at {}",
            timestamp(pair.not_after)
        ));
    }
    if pair.not_before > now {
        return Err(format!(
            "its certificate is not valid before {}",
            timestamp(pair.not_before)
        ));
    }
    Ok(pair)
}

fn timestamp(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The certificate and key of a `kubernetes.io/tls` Secret.
fn read_secret(secret: &Secret) -> Result<KeyPair, String> {
    if secret.type_.as_deref() != Some("kubernetes.io/tls") {
        return Err(format!(
            "it is of type {}, not kubernetes.io/tls",
            secret.type_.as_deref().unwrap_or("Opaque")
        ));
    }
    let data = secret.data.as_ref();
    let field = |name: &str| {
        data.and_then(|d| d.get(name))
            .map(|b| b.0.as_slice())
            .filter(|b| !b.is_empty())
            .ok_or_else(|| format!("it has no {name}"))
    };
    read(field("tls.crt")?, field("tls.key")?)
}

/// The default certificate: the operator's file (chain and key, PEM), or else the one made
/// before in `existing` (so a restart does not change it), or else a new self-signed one.
pub fn default_certificate(
    operator: Option<&std::path::Path>,
    existing: &std::path::Path,
) -> Result<Arc<KeyPair>, String> {
    if let Some(path) = operator {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        return read_bundle(&pem)
            .map(Arc::new)
            .map_err(|e| format!("--default-certificate {}: {e}", path.display()));
    }
    let now = now();
    if let Ok(pem) = std::fs::read(existing)
        && let Ok(pair) = read_bundle(&pem)
        && pair.subject == format!("CN={SELF_SIGNED_NAME}")
        && valid_at(Arc::new(pair.clone()), now + WARN_BEFORE_SECONDS).is_ok()
    {
        return Ok(Arc::new(pair));
    }
    self_signed().map(Arc::new)
}

/// The subject of the self-signed default certificate.
const SELF_SIGNED_NAME: &str = "wasmconfd default certificate";

/// A bundle of certificates and one key, as `default.pem` holds it.
fn read_bundle(pem: &[u8]) -> Result<KeyPair, String> {
    let mut pair = read(pem, pem)?;
    pair.pem = String::from_utf8_lossy(pem).into_owned();
    Ok(pair)
}

/// A new self-signed ECDSA P-256 certificate for ten years, for names no Secret is for.
pub fn self_signed() -> Result<KeyPair, String> {
    let fail = |e: rcgen::Error| format!("cannot make the default certificate: {e}");
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SELF_SIGNED_NAME);
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(10 * 365 * 24 * 3600)).into();
    let cert = params.self_signed(&key).map_err(fail)?;
    read(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fake_apiserver::{TestCa, tls_secret};

    fn secret(value: serde_json::Value) -> Arc<Secret> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    /// Service `t/NAME` of proto https with `domains`, naming TLS Secret `secret`.
    fn service(name: &str, domains: &[&str], secret: &str) -> Arc<Service> {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: t, annotations: \
             {{wasmconfd.io/proto: https, wasmconfd.io/domain: '{}', {ANNOTATION}: {secret}}}}}\n\
             spec: {{ports: [{{name: https, port: 443}}]}}\n",
            domains.join(",")
        );
        let (objects, _) = crate::source::parse_snapshot(&text).unwrap();
        crate::model::build(&objects, &Default::default())
            .0
            .remove(0)
    }

    #[test]
    fn a_certificate_and_its_key_are_read_and_a_foreign_key_is_refused() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["shop.test", "*.shop.test"], 0x1f00, 30);
        let pair = read(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(pair.sans, ["shop.test", "*.shop.test"]);
        assert_eq!(pair.serial, "1f00");
        assert_eq!(pair.key_type, "ecdsa-p256");
        assert_eq!(pair.issuer, "CN=wasmconfd test CA");
        assert!(pair.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pair.pem.ends_with("-----END PRIVATE KEY-----\n"));

        let (_, other_key) = ca.issue(&["shop.test"], 2, 30);
        let error = read(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(error.contains("not the key of the certificate"), "{error}");
        let error = read(b"not pem", key.as_bytes()).unwrap_err();
        assert!(error.contains("tls.crt"), "{error}");
    }

    #[test]
    fn names_are_covered_by_equal_names_and_one_label_wildcards() {
        assert!(covers("shop.test", "shop.test"));
        assert!(covers("*.shop.test", "a.shop.test"));
        assert!(!covers("*.shop.test", "a.b.shop.test"));
        assert!(!covers("*.shop.test", "shop.test"));
        assert!(covers("*.shop.test", "*.shop.test"));
        assert!(!covers("*.test", "*.shop.test"));
        assert!(!covers("shop.test", "*.shop.test"));
    }

    #[test]
    fn each_secret_is_checked_for_its_services_and_a_broken_one_keeps_the_last_good() {
        let ca = TestCa::new();
        let default = Arc::new(self_signed().unwrap());
        let services = [
            service("shop", &["shop.test", "www.shop.test"], "shop-tls"),
            service("blog", &["blog.test"], "blog-tls"),
            service("old", &["old.test"], "old-tls"),
        ];
        let (cert, key) = ca.issue(&["old.test"], 9, -1);
        let mut secrets = vec![
            secret(ca.secret("t", "shop-tls", &["shop.test"], 1)),
            secret(tls_secret("t", "old-tls", &cert, &key)),
        ];
        let mut kept = Kept::default();
        let (certificates, problems) = kept.build(&secrets, &services, &default, now());
        let [shop] = certificates.used.as_slice() else {
            panic!("{certificates:?}")
        };
        assert_eq!(shop.domains, ["shop.test"], "only the names it covers");
        assert_eq!(shop.services, ["shop"]);
        let reasons: Vec<_> = problems.iter().map(ToString::to_string).collect();
        let said = |object: &str, text: &str| {
            reasons
                .iter()
                .any(|r| r.starts_with(object) && r.contains(text))
        };
        assert!(
            said("Service t/shop", "does not cover www.shop.test"),
            "{reasons:#?}"
        );
        assert!(
            said("Service t/blog", "TLS Secret blog-tls"),
            "{reasons:#?}"
        );
        assert!(said("Secret t/old-tls", "expired"), "{reasons:#?}");
        assert_eq!(certificates.crt_list(), "certs/t_shop-tls.pem shop.test\n");
        let tls = certificates.for_services(&services[1..]);
        assert!(
            tls.certificates.is_empty(),
            "blog and old do not use shop's"
        );

        // The Secret turns bad: the last good certificate stays, and the Secret is named.
        let (_, foreign) = ca.issue(&["shop.test"], 3, 30);
        let (cert, _) = ca.issue(&["shop.test"], 2, 30);
        secrets[0] = secret(tls_secret("t", "shop-tls", &cert, &foreign));
        let (again, problems) = kept.build(&secrets, &services, &default, now());
        assert_eq!(again.used[0].pair.serial, "1");
        assert!(
            problems.iter().any(|p| p.object == "Secret t/shop-tls"
                && p.reason
                    .contains("the certificate last read from it stays in use")),
            "{problems:#?}"
        );

        // Without the Secret, nothing is kept.
        let (gone, _) = kept.build(&[], &services, &default, now());
        assert!(gone.used.is_empty());
    }

    #[test]
    fn a_certificate_near_its_end_is_warned_about() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["shop.test"], 1, 5);
        let secrets = [secret(tls_secret("t", "shop-tls", &cert, &key))];
        let services = [service("shop", &["shop.test"], "shop-tls")];
        let default = Arc::new(self_signed().unwrap());
        let (certificates, problems) = Kept::default().build(&secrets, &services, &default, now());
        assert_eq!(certificates.used.len(), 1, "still used");
        assert!(
            problems[0].reason.contains("in less than 14 days"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_self_signed_default_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_FILE);
        let first = default_certificate(None, &path).unwrap();
        assert_eq!(first.subject, format!("CN={SELF_SIGNED_NAME}"));
        std::fs::write(&path, &first.pem).unwrap();
        let second = default_certificate(None, &path).unwrap();
        assert_eq!(second.serial, first.serial);
        let error = default_certificate(Some(&dir.path().join("none.pem")), &path).unwrap_err();
        assert!(error.contains("none.pem"), "{error}");
    }
}
