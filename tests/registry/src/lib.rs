//! An OCI registry for tests: Debian's `docker-registry` (distribution 2.8), started on a free
//! port on 127.0.0.1 with its own configuration, never the packaged service on :5000. It serves
//! HTTPS with a certificate from a throwaway CA and requires basic auth from an htpasswd file
//! (bcrypt). Its storage is a directory the test can reach into, to tamper with blobs. The
//! process is stopped when the [`Registry`] is dropped.
//!
//! [`Misbehaving`] is a registry written for the tests, for what a real one does not do: hang,
//! or send more than it should.

mod misbehaving;

pub use misbehaving::{Behaviour, Misbehaving};

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user and password the registry accepts.
pub const USER: &str = "guests";
pub const PASSWORD: &str = "s3cret-for-tests";

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    /// Start a registry and wait until it accepts connections.
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        write_pki(dir.path());
        let htpasswd = format!("{USER}:{}\n", bcrypt::hash(PASSWORD, 4).unwrap());
        std::fs::write(dir.path().join("htpasswd"), htpasswd).unwrap();
        let config = format!(
            "version: 0.1\n\
             log: {{level: info}}\n\
             storage:\n  filesystem: {{rootdirectory: {storage}}}\n\
             http:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {dir}/server.pem\n    key: {dir}/server-key.pem\n\
             auth:\n  htpasswd: {{realm: wasmconfd-tests, path: {dir}/htpasswd}}\n",
            storage = dir.path().join("storage").display(),
            dir = dir.path().display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = serve(dir.path(), port);
        Registry { child, dir, port }
    }

    /// Serve again after [`Registry::stop`], on the same port with the same storage.
    pub fn resume(&mut self) {
        self.child = serve(self.dir.path(), self.port);
    }

    /// `127.0.0.1:PORT`, the registry part of a reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The CA that signed the registry's certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Where the registry keeps blobs: `<storage>/docker/registry/v2/blobs/sha256/<2>/<hex>/data`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// What the registry logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Stop serving (the registry is down); the storage stays.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run docker-registry with the configuration in `dir`, and wait until it accepts connections.
fn serve(dir: &Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("registry.log"))
        .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("docker-registry is not installed: apt-get install docker-registry (scripts/setup.sh does)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not start:\n{}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test registry CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), server_key.serialize_pem()).unwrap();
}
