//! Hosted packages (part 14, in progress): wheels and sdists uploaded to
//! roxpi itself. What exists so far: the checks an upload must pass
//! (`check`) and the plain-file store with its crash-safe commit
//! (`store`); the upload route (streamed request bodies), the merged
//! pages and the read tokens come next.

pub mod check;
pub mod store;
pub mod upload;
