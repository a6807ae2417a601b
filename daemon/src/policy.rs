//! The wasm policy host behind the placement pipeline's [`PolicyRunner`].

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tmc_policy_host::{HostConfig, PolicyError, PolicyHost, PolicyInfo};
use tmc_policy_sdk::abi::{PlacementDecision, PlacementRequest, TransformRequest, TransformResult};

use crate::config::Policies;
use crate::placement::runner::PolicyRunner;

/// The host's limits from `[policies]` (the others keep the host's defaults).
pub fn host_config(policies: &Policies) -> HostConfig {
    let defaults = HostConfig::default();
    HostConfig {
        deadline: Duration::from_millis(*policies.timeout_ms.get_ref()),
        load_budget: Duration::from_millis(*policies.load_timeout_ms.get_ref()),
        fuel: policies.fuel.unwrap_or(defaults.fuel),
        memory_cap: usize::try_from(*policies.max_memory_mib.get_ref())
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20),
        ..defaults
    }
}

/// [`PolicyRunner`] over the sandboxed wasm host.
#[derive(Clone)]
pub struct HostRunner(pub PolicyHost);

impl PolicyRunner for HostRunner {
    fn place<'a>(
        &'a self,
        policy: &'a str,
        req: &'a PlacementRequest,
    ) -> BoxFuture<'a, Result<PlacementDecision, PolicyError>> {
        Box::pin(async move { self.0.place(policy, req).await.map(|e| e.value) })
    }

    fn transform<'a>(
        &'a self,
        policy: &'a str,
        req: &'a TransformRequest,
    ) -> BoxFuture<'a, Result<TransformResult, PolicyError>> {
        Box::pin(async move { self.0.transform(policy, req).await.map(|e| e.value) })
    }

    fn generation(&self) -> u64 {
        self.0.generation().number
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.subscribe()
    }

    fn validate_settings<'a>(
        &'a self,
        policy: &'a str,
        settings: &'a Value,
    ) -> BoxFuture<'a, Result<(), PolicyError>> {
        Box::pin(self.0.validate_settings(policy, settings))
    }

    fn policies(&self) -> Vec<PolicyInfo> {
        self.0.generation().policy_infos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_hosts_and_every_key_is_applied() {
        let host = HostConfig::default();
        let mapped = host_config(&Policies::default());
        assert_eq!(mapped.deadline, host.deadline);
        assert_eq!(mapped.load_budget, host.load_budget);
        assert_eq!(mapped.fuel, host.fuel);
        assert_eq!(mapped.memory_cap, host.memory_cap);
        assert_eq!(host.memory_cap, 64 << 20, "docs/policy-abi.md section 4");

        let set = Policies {
            max_memory_mib: toml::Spanned::new(0..0, 32),
            timeout_ms: toml::Spanned::new(0..0, 250),
            load_timeout_ms: toml::Spanned::new(0..0, 2_000),
            fuel: Some(0),
            ..Policies::default()
        };
        let mapped = host_config(&set);
        assert_eq!(mapped.memory_cap, 32 << 20);
        assert_eq!(mapped.deadline, Duration::from_millis(250));
        assert_eq!(mapped.load_budget, Duration::from_secs(2));
        assert_eq!(mapped.fuel, 0, "0 turns metering off");
    }
}
