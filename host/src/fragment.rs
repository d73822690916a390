//! A guest's output as the host holds it.

use crate::bindings::{MapFile, Section, WitFragment};
use std::sync::Arc;

/// A guest's output: the WIT `fragment` with each section and map file shared (`Arc`), so that
/// keeping an output, passing it on and comparing it with the last one costs a pointer per
/// section where nothing changed, not a copy of the whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fragment {
    pub sections: Vec<Arc<Section>>,
    pub maps: Vec<Arc<MapFile>>,
}

impl From<WitFragment> for Fragment {
    fn from(fragment: WitFragment) -> Self {
        Fragment {
            sections: fragment.sections.into_iter().map(Arc::new).collect(),
            maps: fragment.maps.into_iter().map(Arc::new).collect(),
        }
    }
}

impl Fragment {
    pub fn new(
        sections: impl IntoIterator<Item = Section>,
        maps: impl IntoIterator<Item = MapFile>,
    ) -> Self {
        Fragment {
            sections: sections.into_iter().map(Arc::new).collect(),
            maps: maps.into_iter().map(Arc::new).collect(),
        }
    }
}
