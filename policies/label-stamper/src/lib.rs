//! The `label-stamper` transformation policy.
//!
//! Stamps per-target labels and annotations on each target's copy of a
//! workload, from templates in its settings. Placeholders: `{target}`,
//! `{region}`, `{zone}`, `{replicas}`, `{namespace}`, `{name}`; anything else
//! is literal text (so fixed values such as `environment: prod` are plain
//! strings). Unless `"defaults": false`, it also stamps
//! `tmc.kcp.io/target: {target}` and `tmc.kcp.io/region: {region}`.

mod settings;
mod template;

use tmc_policy_sdk::{StringMap, TransformPolicy, TransformRequest, TransformResult, rules};

pub use settings::Settings;
pub use template::{Template, Vars};

/// The policy type exported to wasm.
pub struct LabelStamper;

impl TransformPolicy for LabelStamper {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings.validate()
    }

    fn transform(req: &TransformRequest, settings: &Settings) -> Result<TransformResult, String> {
        stamp(req, settings)
    }
}

tmc_policy_sdk::export_transform_policy!(LabelStamper);
tmc_policy_sdk::export_test_vectors!(include_str!("../vectors.json"));

/// Renders every template for the request's target.
pub fn stamp(req: &TransformRequest, settings: &Settings) -> Result<TransformResult, String> {
    let replicas = req.replicas.map(|r| r.to_string()).unwrap_or_default();
    let vars = Vars {
        target: &req.target.name,
        region: &req.target.location.region,
        zone: &req.target.location.zone,
        replicas: &replicas,
        namespace: &req.workload.namespace,
        name: &req.workload.name,
    };
    let mut result = TransformResult::default();
    for (key, template) in settings.label_templates() {
        let value = Template::parse(&template)?.render(&vars);
        rules::validate_label_value(&value).map_err(|why| {
            format!("label {key:?} renders to {value:?} for target {:?}, not a valid label value: {why}", req.target.name)
        })?;
        result.labels.set.insert(key, value);
    }
    result.annotations.set = render_all(&settings.annotations, &vars)?;
    Ok(result)
}

fn render_all(templates: &StringMap, vars: &Vars) -> Result<StringMap, String> {
    templates
        .iter()
        .map(|(k, t)| Ok((k.clone(), Template::parse(t)?.render(vars))))
        .collect()
}

#[cfg(test)]
mod tests;
