//! Settings of `active-passive`: none.

use serde::Deserialize;

/// `{}` (or absent): the policy has no settings; any field is refused so a
/// typo or a setting meant for another policy does not go unnoticed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}
