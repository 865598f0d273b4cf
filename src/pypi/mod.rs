//! Domain types and pure protocol code of the simple repository API:
//! project names, the page model, upstream parsing, negotiation, rendering.
//! No I/O and nothing of HTTP serving lives here.

pub mod filename;
pub mod model;
pub mod name;
pub mod negotiate;
pub mod parse;
pub mod render;
pub mod wire;

pub use model::{CoreMetadata, FileEntry, Filename, Hashes, ProjectList, ProjectPage, Yanked};
pub use name::ProjectName;
pub use negotiate::{negotiate_coding, negotiate_format, Coding, PageFormat};
pub use parse::{parse_project_list, parse_project_page, Format, ParseError};
pub use render::{merge, render_list, render_project, write_project, Listed, PageView, Strategy};
