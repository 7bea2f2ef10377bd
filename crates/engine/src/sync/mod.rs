//! The sync steps, one file each: check and download at request start ([`pull`]), write a
//! download as it arrives and answer from it before it is installed ([`staged`]), put a
//! newer database in place ([`install`]), follow the log of changes ([`log`]), upload
//! after a write ([`upload`]), finish a
//! write whose upload failed ([`pending`]), and keep a losing database aside ([`aside`]).
//! Each is a function over the engine's `Context`, the user and the slot state its caller
//! holds: a step never takes a lock and never spawns (that is `runtime`'s).

pub(crate) mod aside;
pub(crate) mod compact;
pub(crate) mod install;
pub(crate) mod log;
pub(crate) mod pending;
pub(crate) mod pull;
pub(crate) mod staged;
pub(crate) mod upload;
