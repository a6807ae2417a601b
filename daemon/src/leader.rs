//! Leader election through a `coordination.k8s.io/v1` Lease: only the holder
//! runs controllers and syncers; the others take over when it expires.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, Error};

/// One replica's view of the lease.
pub struct Elector {
    api: Api<Lease>,
    namespaces: Api<Namespace>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
}

/// Whether `renewed + duration` lies before `now`.
pub fn expired(renewed: Option<Timestamp>, duration: Duration, now: Timestamp) -> bool {
    let Some(renewed) = renewed else { return true };
    let age = now.duration_since(renewed);
    age.as_secs_f64() > duration.as_secs_f64()
}

impl Elector {
    /// An elector for lease `namespace/name` as `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            namespaces: Api::all(client),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// How often to renew.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Acquires or renews the lease; `Ok(true)` when this replica holds it.
    pub async fn try_lead(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            self.ensure_namespace().await?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref();
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
            .unwrap_or(self.duration);
        let transitions = spec.lease_transitions.unwrap_or(0);
        let next = if holder == Some(self.identity.as_str()) {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.spec(acquired, now, transitions)
        } else if holder.is_none() || expired(spec.renew_time.map(|t| t.0), duration, now) {
            self.spec(now, now, transitions + 1)
        } else {
            return Ok(false);
        };
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this replica holds it, so another takes over at once.
    pub async fn release(&self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn ensure_namespace(&self) -> Result<(), Error> {
        if self.namespaces.get_opt(&self.namespace).await?.is_some() {
            return Ok(());
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match self.namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = Timestamp::from_second(1_000).expect("ts");
        let d = Duration::from_secs(15);
        assert!(expired(None, d, now));
        assert!(!expired(
            Some(Timestamp::from_second(990).expect("ts")),
            d,
            now
        ));
        assert!(expired(
            Some(Timestamp::from_second(980).expect("ts")),
            d,
            now
        ));
    }
}
