//! The sync steps, one file each: check and download at request start ([`pull`]), write a
//! download as it arrives and answer from it before it is installed ([`staged`]), put a
//! newer database in place ([`install`]), upload
//! after a write ([`upload`]), finish a write whose upload failed ([`pending`]), upload
//! `async` writes in the background ([`background`]), and keep a losing database aside
//! ([`aside`]).

pub(crate) mod aside;
pub(crate) mod background;
pub(crate) mod install;
pub(crate) mod pending;
pub(crate) mod pull;
pub(crate) mod staged;
pub(crate) mod upload;
