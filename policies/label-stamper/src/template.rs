//! `{placeholder}` templates.

/// Values the placeholders take for one target.
pub struct Vars<'a> {
    pub target: &'a str,
    pub region: &'a str,
    pub zone: &'a str,
    pub replicas: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Target,
    Region,
    Zone,
    Replicas,
    Namespace,
    Name,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed template: literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses `text`; an unknown or unclosed placeholder is an error naming it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("template {text:?}: unclosed '{{'"))?;
            let var = match &after[..close] {
                "target" => Var::Target,
                "region" => Var::Region,
                "zone" => Var::Zone,
                "replicas" => Var::Replicas,
                "namespace" => Var::Namespace,
                "name" => Var::Name,
                other => {
                    return Err(format!(
                        "template {text:?}: unknown placeholder {{{other}}} (known: {{target}}, {{region}}, {{zone}}, {{replicas}}, {{namespace}}, {{name}})"
                    ));
                }
            };
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template(parts))
    }

    /// Substitutes the placeholders.
    pub fn render(&self, vars: &Vars) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Var(Var::Target) => vars.target,
                Part::Var(Var::Region) => vars.region,
                Part::Var(Var::Zone) => vars.zone,
                Part::Var(Var::Replicas) => vars.replicas,
                Part::Var(Var::Namespace) => vars.namespace,
                Part::Var(Var::Name) => vars.name,
            })
            .collect()
    }
}
