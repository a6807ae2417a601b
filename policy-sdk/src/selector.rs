//! Kubernetes label selector matching, shared by policies and the host.

use crate::abi::{LabelSelector, LabelSelectorRequirement, StringMap};

impl LabelSelector {
    /// True when `labels` satisfies every `matchLabels` pair and every
    /// `matchExpressions` requirement. The empty selector matches everything.
    pub fn matches(&self, labels: &StringMap) -> bool {
        self.match_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            && self.match_expressions.iter().all(|req| req.matches(labels))
    }
}

impl LabelSelectorRequirement {
    /// Evaluates one requirement (`In`, `NotIn`, `Exists`, `DoesNotExist`).
    /// An unknown operator never matches.
    pub fn matches(&self, labels: &StringMap) -> bool {
        let value = labels.get(&self.key);
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.contains(v)),
            "NotIn" => value.is_none_or(|v| !self.values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> StringMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&StringMap::new()));
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_needs_equal_values() {
        let sel = LabelSelector {
            match_labels: labels(&[("region", "west")]),
            ..Default::default()
        };
        assert!(sel.matches(&labels(&[("region", "west"), ("x", "y")])));
        assert!(!sel.matches(&labels(&[("region", "east")])));
        assert!(!sel.matches(&StringMap::new()));
    }

    #[test]
    fn operators() {
        let l = labels(&[("region", "west")]);
        assert!(req("region", "In", &["west", "east"]).matches(&l));
        assert!(!req("region", "In", &["east"]).matches(&l));
        assert!(!req("zone", "In", &["a"]).matches(&l));
        assert!(req("region", "NotIn", &["east"]).matches(&l));
        assert!(!req("region", "NotIn", &["west"]).matches(&l));
        assert!(req("zone", "NotIn", &["a"]).matches(&l));
        assert!(req("region", "Exists", &[]).matches(&l));
        assert!(!req("zone", "Exists", &[]).matches(&l));
        assert!(req("zone", "DoesNotExist", &[]).matches(&l));
        assert!(!req("region", "DoesNotExist", &[]).matches(&l));
        assert!(!req("region", "Bogus", &[]).matches(&l));
    }

    #[test]
    fn labels_and_expressions_combine_with_and() {
        let sel = LabelSelector {
            match_labels: labels(&[("tier", "prod")]),
            match_expressions: vec![req("region", "In", &["west"])],
        };
        assert!(sel.matches(&labels(&[("tier", "prod"), ("region", "west")])));
        assert!(!sel.matches(&labels(&[("tier", "prod"), ("region", "east")])));
        assert!(!sel.matches(&labels(&[("tier", "dev"), ("region", "west")])));
    }
}
