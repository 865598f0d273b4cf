//! Hosted packages (part 14, in progress): wheels and sdists uploaded to
//! roxpi itself. What exists so far is the checks an upload must pass
//! (`check`); the upload route, the hosted store and the merged pages
//! come next.

pub mod check;
