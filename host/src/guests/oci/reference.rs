//! `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`.

use std::fmt;
use std::str::FromStr;

/// A guest in an OCI registry: `oci://REGISTRY/REPOSITORY:TAG`, `oci://REGISTRY/REPOSITORY@sha256:DIGEST`
/// or both (the tag for people, the digest pinning what runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRef {
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex digits>`.
    pub digest: Option<String>,
}

impl FromStr for GuestRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "expected oci://REGISTRY/REPOSITORY:TAG, oci://REGISTRY/REPOSITORY@sha256:DIGEST \
                     or oci://REGISTRY/REPOSITORY:TAG@sha256:DIGEST";
        let bad = |why: &str| format!("{text:?} is not a guest reference: {why}; {usage}");
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| bad("it does not start with oci://"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (rest, None),
        };
        if let Some(digest) = digest {
            let hex = digest
                .strip_prefix("sha256:")
                .ok_or_else(|| bad("the digest does not start with sha256:"))?;
            if !valid_hex_digest(hex) {
                return Err(bad("a sha256 digest is 64 lower-case hex digits"));
            }
        }
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("there is no repository after the registry"))?;
        let host_chars = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
        if registry.is_empty() || !registry.chars().all(host_chars) {
            return Err(bad(
                "the registry must be a host name or address, with an optional port",
            ));
        }
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) => (repository, Some(tag)),
            None => (path, None),
        };
        if !valid_repository(repository) {
            return Err(bad(
                "the repository must be /-separated parts of lower-case letters and digits, \
                 with single ._- between them",
            ));
        }
        if tag.is_some_and(|tag| !valid_tag(tag)) {
            return Err(bad("a tag is up to 128 letters, digits and ._-"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(bad(
                "name a tag or a digest (there is no implicit `latest`)",
            ));
        }
        Ok(GuestRef {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.map(str::to_string),
            digest: digest.map(str::to_string),
        })
    }
}

fn valid_hex_digest(hex: &str) -> bool {
    hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The OCI distribution grammar: each part starts and ends with a letter or digit, with single
/// separators between, so `.` and `..` are never parts.
fn valid_repository(repository: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    repository.split('/').all(|part| {
        part.bytes().next().is_some_and(alphanumeric)
            && part.bytes().last().is_some_and(alphanumeric)
            && part.bytes().all(|b| alphanumeric(b) || b"._-".contains(&b))
            && !part.contains("..")
    })
}

fn valid_tag(tag: &str) -> bool {
    tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl fmt::Display for GuestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl GuestRef {
    /// The same reference pinned to `digest`.
    pub fn at(&self, digest: &str) -> GuestRef {
        GuestRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }

    /// The same reference for oci-client, built from its parts: parsing one compiles a large
    /// regular expression, a good part of a start's time.
    pub(super) fn reference(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match (self.tag.clone(), self.digest.clone()) {
            (Some(tag), Some(digest)) => {
                oci_client::Reference::with_tag_and_digest(registry, repository, tag, digest)
            }
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest)
            }
            (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag),
            (None, None) => unreachable!("a GuestRef names a tag or a digest"),
        }
    }
}

impl GuestRef {
    /// Where cosign keeps the signatures of `digest`: the tag `sha256-<hex>.sig`.
    pub(super) fn signatures(&self, digest: &str) -> GuestRef {
        GuestRef {
            tag: Some(format!("{}.sig", digest.replace(':', "-"))),
            digest: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_three_forms_parse_and_print_back() {
        for text in [
            "oci://registry.example.com/team/paths:1.2.0".to_string(),
            format!("oci://127.0.0.1:5000/paths@{DIGEST}"),
            format!("oci://registry.example.com:443/a/b/paths:v2@{DIGEST}"),
        ] {
            let parsed: GuestRef = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
        let pinned: GuestRef = format!("oci://127.0.0.1:5000/team/paths:v1@{DIGEST}")
            .parse()
            .unwrap();
        assert_eq!(
            pinned,
            GuestRef {
                registry: "127.0.0.1:5000".into(),
                repository: "team/paths".into(),
                tag: Some("v1".into()),
                digest: Some(DIGEST.into()),
            }
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        let error = |text: &str| text.parse::<GuestRef>().unwrap_err();
        assert!(error("registry.example.com/paths:1").contains("does not start with oci://"));
        assert!(error("oci://registry.example.com/paths").contains("name a tag or a digest"));
        assert!(error("oci://registry.example.com:5000").contains("no repository"));
        assert!(error("oci://r.example.com/Paths:1").contains("lower-case"));
        assert!(error("oci://r.example.com/paths@sha256:abc").contains("64 lower-case hex"));
        assert!(error("oci://r.example.com/paths@md5:abc").contains("sha256:"));
        assert!(error("oci://r.example.com/paths:a b").contains("a tag is"));
        assert!(error("oci://r.example.com//paths:1").contains("repository"));
        for path in [
            "../../v2/team/good",
            "team/../good",
            "team/./good",
            "team/.good",
            "team-/g",
        ] {
            let text = format!("oci://r.example.com/{path}:1");
            assert!(error(&text).contains("repository"), "{text} accepted");
        }
        assert!(
            "oci://r.example.com/team/my_guest.v-2:1"
                .parse::<GuestRef>()
                .is_ok()
        );
    }
}
