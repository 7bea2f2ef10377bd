//! `store.url`: which object store holds the bucket, and under which prefix.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use cellar_engine::layout::DEFAULT_PREFIX;

/// A parsed `store.url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://PATH`: a local folder; objects live under the default prefix.
    Folder(PathBuf),
    /// `s3://BUCKET/PREFIX`: an S3-compatible bucket (R2, S3, MinIO, SeaweedFS).
    S3 {
        /// The bucket name.
        bucket: String,
        /// The object prefix (the default prefix when the URL names none).
        prefix: String,
    },
    /// `memory://`: inside this process only, gone when it exits (for trying things out).
    Memory,
}

impl StoreUrl {
    /// The prefix under which users' objects live (DESIGN §3).
    pub fn prefix(&self) -> &str {
        match self {
            StoreUrl::S3 { prefix, .. } => prefix,
            StoreUrl::Folder(_) | StoreUrl::Memory => DEFAULT_PREFIX,
        }
    }
}

impl FromStr for StoreUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("file://") {
            return if path.is_empty() {
                Err("file:// needs a folder path, such as file://./cellar-data/bucket".into())
            } else {
                Ok(StoreUrl::Folder(PathBuf::from(path)))
            };
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return parse_s3(rest);
        }
        if url == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        Err(format!(
            "{url:?} is not a store URL; expected file://PATH, s3://BUCKET/PREFIX or memory://"
        ))
    }
}

/// Parses what follows `s3://`: a bucket, then an optional prefix.
fn parse_s3(rest: &str) -> Result<StoreUrl, String> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("s3:// needs a bucket name, such as s3://my-bucket/cellar-users".into());
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| matches!(part, "." | "..")) || prefix.contains("//") {
        return Err(format!(
            "the prefix {prefix:?} has an empty, '.' or '..' segment"
        ));
    }
    Ok(StoreUrl::S3 {
        bucket: bucket.to_owned(),
        prefix: if prefix.is_empty() {
            DEFAULT_PREFIX
        } else {
            prefix
        }
        .to_owned(),
    })
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Folder(path) => write!(f, "file://{}", path.display()),
            StoreUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            StoreUrl::Memory => f.write_str("memory://"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_urls_keep_their_path_and_use_the_default_prefix() {
        let url: StoreUrl = "file://./cellar-data/bucket".parse().unwrap();
        assert_eq!(url, StoreUrl::Folder(PathBuf::from("./cellar-data/bucket")));
        assert_eq!(url.prefix(), "cellar-users");
        let absolute: StoreUrl = "file:///srv/bucket".parse().unwrap();
        assert_eq!(absolute, StoreUrl::Folder(PathBuf::from("/srv/bucket")));
    }

    #[test]
    fn s3_urls_take_their_prefix_from_the_path_or_the_default() {
        let cases = [
            ("s3://b/tenants/eu", "tenants/eu"),
            ("s3://b/tenants/", "tenants"),
            ("s3://b/", "cellar-users"),
            ("s3://b", "cellar-users"),
        ];
        for (url, prefix) in cases {
            let parsed: StoreUrl = url.parse().unwrap();
            assert_eq!(
                parsed,
                StoreUrl::S3 {
                    bucket: "b".into(),
                    prefix: prefix.into()
                },
                "{url}"
            );
        }
    }

    #[test]
    fn malformed_urls_are_refused_with_the_expected_forms() {
        for bad in [
            "",
            "file://",
            "s3://",
            "s3:///prefix",
            "s3://b/a//c",
            "s3://b/../x",
            "http://x",
            "memory://x",
        ] {
            let err = bad.parse::<StoreUrl>().expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        let err = "gs://bucket".parse::<StoreUrl>().unwrap_err();
        assert!(err.contains("s3://BUCKET/PREFIX"), "{err}");
    }
}
