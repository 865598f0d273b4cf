//! The PEP 691 JSON wire format, one set of types for both directions:
//! parsing an upstream's page (unknown keys tolerated, legacy spellings
//! accepted) and rendering roxpi's own (fields in a fixed order, absent ones
//! left out, the legacy `dist-info-metadata` spellings never written).
//! Strings are `Cow`: owned when parsed, borrowed from the model when
//! rendered.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::Hashes;

#[derive(Serialize, Deserialize)]
pub struct Meta<'a> {
    #[serde(rename = "api-version")]
    pub api_version: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
pub struct Page<'a> {
    pub meta: Option<Meta<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default)]
    pub files: Vec<File<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<Cow<'a, str>>>,
    #[serde(
        rename = "project-status",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub project_status: Option<Status<'a>>,
}

#[derive(Serialize, Deserialize)]
pub struct Status<'a> {
    pub status: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Cow<'a, str>>,
}

/// PEP 592 `yanked`: a boolean or a reason.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub enum Yanked<'a> {
    Bool(bool),
    Reason(Cow<'a, str>),
}

/// PEP 658/714 `core-metadata`: a boolean or hashes.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metadata<'a> {
    Bool(bool),
    Hashes(Cow<'a, Hashes>),
}

/// One file. The field order is the rendered order (stable ETags).
#[derive(Serialize, Deserialize)]
pub struct File<'a> {
    pub filename: Cow<'a, str>,
    pub url: Cow<'a, str>,
    #[serde(default)]
    pub hashes: Cow<'a, Hashes>,
    #[serde(
        rename = "requires-python",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub requires_python: Option<Cow<'a, str>>,
    #[serde(
        rename = "core-metadata",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub core_metadata: Option<Metadata<'a>>,
    // Legacy spellings (PEP 714), read only: PyPI still sends the second.
    #[serde(rename = "dist-info-metadata", default, skip_serializing)]
    pub dist_info_metadata: Option<Metadata<'a>>,
    #[serde(rename = "data-dist-info-metadata", default, skip_serializing)]
    pub data_dist_info_metadata: Option<Metadata<'a>>,
    #[serde(rename = "gpg-sig", default, skip_serializing_if = "Option::is_none")]
    pub gpg_sig: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yanked: Option<Yanked<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(
        rename = "upload-time",
        default,
        deserialize_with = "text_or_nothing",
        skip_serializing_if = "Option::is_none"
    )]
    pub upload_time: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Cow<'a, str>>,
}

#[derive(Serialize, Deserialize)]
pub struct List<'a> {
    pub meta: Option<Meta<'a>>,
    #[serde(default)]
    pub projects: Vec<ListEntry<'a>>,
}

#[derive(Serialize, Deserialize)]
pub struct ListEntry<'a> {
    pub name: Cow<'a, str>,
}

/// A string, or nothing when the upstream sent another JSON type there (a
/// number as `upload-time`): one odd field makes the file untimed, not the
/// whole page unusable.
fn text_or_nothing<'de, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Lenient {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Lenient::deserialize(d)? {
        Lenient::Text(t) => Some(Cow::Owned(t)),
        Lenient::Other(_) => None,
    })
}
