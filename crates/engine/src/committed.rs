//! [`Committed`]: what a request that finished tells its caller.

use crate::version::Version;

/// The outcome of a request that finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<T> {
    /// What the work returned.
    pub value: T,
    /// The version the database is at now (the uploaded one, if the request wrote).
    pub version: Version,
    /// True exactly when the request changed the database (and so uploaded, or, with
    /// `durability = async`, queued an upload).
    pub wrote: bool,
    /// True when the bucket already held `version` when the request finished; false when
    /// the version is only committed locally and its upload is pending (`async`).
    pub in_bucket: bool,
}
