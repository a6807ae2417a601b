//! Whether the policies accept a placement's settings, remembered: a policy's
//! answer depends only on the settings, so it is asked again only when the
//! placement's spec (its generation) or the policy set changes.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tmc_api::crd::ClusterWorkloadPlacement;

use super::runner::{PolicyFailure, PolicyRunner, check_settings};

/// The settings verdict of each placement, by name (prefixed by its
/// logical cluster in export mode).
#[derive(Debug, Default)]
pub struct SettingsVerdicts {
    verdicts: Mutex<HashMap<String, Verdict>>,
}

/// One answer and what it was asked for.
#[derive(Debug, Clone)]
struct Verdict {
    /// The placement's uid and generation: a recreated or edited placement is asked again.
    uid: Option<String>,
    generation: Option<i64>,
    /// The generation of the policy set that answered.
    policies: u64,
    answer: Result<(), PolicyFailure>,
}

impl SettingsVerdicts {
    /// Checks the settings of `placement`'s policy and transformations (see
    /// [`check_settings`]), or answers as the last check of the same
    /// placement spec under the same policy set did.
    pub async fn check(
        &self,
        runner: &dyn PolicyRunner,
        placement: &ClusterWorkloadPlacement,
    ) -> Result<(), PolicyFailure> {
        let name = super::selector::placement_key(placement);
        let (uid, generation, policies) = (
            placement.metadata.uid.clone(),
            placement.metadata.generation,
            runner.generation(),
        );
        let remembered = self
            .lock()
            .get(&name)
            .filter(|v| v.uid == uid && v.generation == generation && v.policies == policies)
            .map(|v| v.answer.clone());
        if let Some(answer) = remembered {
            return answer;
        }
        let answer = check_settings(runner, placement).await;
        let verdict = Verdict {
            uid,
            generation,
            policies,
            answer: answer.clone(),
        };
        self.lock().insert(name, verdict);
        answer
    }

    /// Forgets the placements whose name `keep` refuses.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verdict>> {
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::runner::fake::FakeRunner;
    use serde_json::json;
    use tmc_api::crd::{ClusterWorkloadPlacementSpec, PolicyRef};

    #[tokio::test]
    async fn settings_are_asked_again_only_when_the_placement_or_the_policies_change() {
        let mut runner = FakeRunner::new();
        runner
            .place
            .insert("rs".into(), Box::new(|_| Ok(Default::default())));
        let mut p = ClusterWorkloadPlacement::new(
            "spread",
            ClusterWorkloadPlacementSpec {
                policy: PolicyRef {
                    name: "rs".into(),
                    settings: Some(json!({"invalid": true})),
                },
                ..Default::default()
            },
        );
        p.metadata.uid = Some("u1".into());
        p.metadata.generation = Some(1);
        let verdicts = SettingsVerdicts::default();
        let refused = verdicts.check(&runner, &p).await.expect_err("refused");
        assert!(refused.message.to_string().contains("invalid"), "{refused}");

        // The same spec generation: the answer is remembered, not asked again.
        p.spec.policy.settings = None;
        assert!(verdicts.check(&runner, &p).await.is_err());
        // A new spec generation is asked again.
        p.metadata.generation = Some(2);
        assert!(verdicts.check(&runner, &p).await.is_ok());
        // So is a new policy set, and a placement recreated under the same name.
        p.spec.policy.settings = Some(json!({"invalid": true}));
        runner.generation.send_replace(2);
        assert!(verdicts.check(&runner, &p).await.is_err());
        p.spec.policy.settings = None;
        p.metadata.uid = Some("u2".into());
        assert!(verdicts.check(&runner, &p).await.is_ok());

        verdicts.retain(|_| false);
        assert!(
            verdicts.lock().is_empty(),
            "deleted placements are forgotten"
        );
    }
}
