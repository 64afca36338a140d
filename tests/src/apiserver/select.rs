//! Label and field selectors as the API server parses them (`labelSelector`,
//! `fieldSelector` query parameters), and which objects they match.
use serde_json::Value;

use super::Kind;

/// A selector the server cannot honour: answered 400 Bad Request, as the real server does.
#[derive(Debug, PartialEq, Eq)]
pub struct BadSelector(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FieldReq {
    Eq(&'static str, String),
    Ne(&'static str, String),
}

/// What a list or watch request selects: its namespace (from the path) and selectors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub namespace: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// The fields the server selects on for `kind`: `metadata.*` everywhere, as the real
/// server does, and the Pod fields a node agent watches by.
fn field_path(kind: Kind, field: &str) -> Option<&'static str> {
    match (kind, field) {
        (_, "metadata.name") => Some("metadata.name"),
        (_, "metadata.namespace") => Some("metadata.namespace"),
        (Kind::Pod, "spec.nodeName") => Some("spec.nodeName"),
        (Kind::Pod, "status.podIP") => Some("status.podIP"),
        (Kind::Pod, "status.phase") => Some("status.phase"),
        _ => None,
    }
}

/// An object's value for a selectable field: unset reads as "", so `spec.nodeName=`
/// selects unscheduled Pods as it does on a real server.
fn field_value<'a>(obj: &'a Value, path: &str) -> &'a str {
    path.split('.')
        .fold(obj, |v, part| &v[part])
        .as_str()
        .unwrap_or("")
}

impl Filter {
    pub fn parse(
        kind: Kind,
        namespace: Option<String>,
        labels: Option<&str>,
        fields: Option<&str>,
    ) -> Result<Self, BadSelector> {
        Ok(Self {
            namespace,
            labels: labels.map(parse_labels).transpose()?.unwrap_or_default(),
            fields: fields
                .map(|f| parse_fields(kind, f))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace {
            if obj["metadata"]["namespace"].as_str() != Some(ns) {
                return false;
            }
        }
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels[k].as_str();
        self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v),
            LabelReq::Ne(k, v) => label(k) != Some(v),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::Absent(k) => label(k).is_none(),
        }) && self.fields.iter().all(|r| match r {
            FieldReq::Eq(p, v) => field_value(obj, p) == v,
            FieldReq::Ne(p, v) => field_value(obj, p) != v,
        })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b` is two requirements).
fn requirements(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(s[start..].trim());
    out.retain(|r| !r.is_empty());
    out
}

fn parse_labels(s: &str) -> Result<Vec<LabelReq>, BadSelector> {
    let bad = |r: &str| BadSelector(format!("unable to parse requirement: {r:?}"));
    requirements(s)
        .into_iter()
        .map(|r| {
            let set = |op: &str| -> Option<(String, Vec<String>)> {
                let (k, rest) = r.split_once(op)?;
                let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
                Some((
                    k.trim().to_owned(),
                    inner.split(',').map(|v| v.trim().to_owned()).collect(),
                ))
            };
            if let Some((k, vs)) = set(" notin ") {
                Ok(LabelReq::NotIn(k, vs))
            } else if let Some((k, vs)) = set(" in ") {
                Ok(LabelReq::In(k, vs))
            } else if let Some((k, v)) = r.split_once("!=") {
                Ok(LabelReq::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                Ok(LabelReq::Eq(k.trim().into(), v.trim().into()))
            } else if let Some(k) = r.strip_prefix('!') {
                Ok(LabelReq::Absent(k.trim().into()))
            } else if r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Ok(LabelReq::Exists(r.into()))
            } else {
                Err(bad(r))
            }
        })
        .collect()
}

fn parse_fields(kind: Kind, s: &str) -> Result<Vec<FieldReq>, BadSelector> {
    requirements(s)
        .into_iter()
        .map(|r| {
            let (field, value, eq) = if let Some((f, v)) = r.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                (f, v, true)
            } else {
                return Err(BadSelector(format!("invalid field selector: {r:?}")));
            };
            let path = field_path(kind, field.trim()).ok_or_else(|| {
                BadSelector(format!("field label not supported: {}", field.trim()))
            })?;
            let value = value.trim().to_owned();
            Ok(if eq {
                FieldReq::Eq(path, value)
            } else {
                FieldReq::Ne(path, value)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: Option<&str>, phase: &str, labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "shop", "labels": labels},
               "spec": {"nodeName": node}, "status": {"phase": phase, "podIP": "10.1.0.5"}})
    }

    fn filter(labels: Option<&str>, fields: Option<&str>) -> Filter {
        Filter::parse(Kind::Pod, None, labels, fields).unwrap()
    }

    #[test]
    fn field_selectors_on_pod_fields() {
        let on_a = pod(Some("node-a"), "Running", json!({}));
        let unscheduled = pod(None, "Pending", json!({}));
        let f = filter(None, Some("spec.nodeName=node-a"));
        assert!(f.matches(&on_a) && !f.matches(&unscheduled));
        assert!(filter(None, Some("spec.nodeName=")).matches(&unscheduled));
        let f = filter(None, Some("status.phase!=Pending,status.podIP==10.1.0.5"));
        assert!(f.matches(&on_a) && !f.matches(&unscheduled));
        assert!(filter(None, Some("metadata.namespace=shop")).matches(&on_a));
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        let e = Filter::parse(Kind::Pod, None, None, Some("spec.restartPolicy=Always"));
        assert_eq!(
            e,
            Err(BadSelector(
                "field label not supported: spec.restartPolicy".into()
            ))
        );
        assert!(Filter::parse(Kind::Service, None, None, Some("spec.nodeName=a")).is_err());
        assert!(Filter::parse(Kind::Service, None, None, Some("metadata.name=a")).is_ok());
    }

    #[test]
    fn label_selectors_equality_and_sets() {
        let web = pod(None, "Running", json!({"app": "web", "tier": "front"}));
        let db = pod(None, "Running", json!({"app": "db"}));
        let cases = [
            ("app=web", true, false),
            ("app==web,tier", true, false),
            ("app!=web", false, true),
            ("app in (web, db)", true, true),
            ("app notin (web),!tier", false, true),
            ("tier", true, false),
        ];
        for (sel, w, d) in cases {
            let f = filter(Some(sel), None);
            assert_eq!((f.matches(&web), f.matches(&db)), (w, d), "{sel}");
        }
        assert!(Filter::parse(Kind::Pod, None, Some("a b"), None).is_err());
    }

    #[test]
    fn the_path_namespace_is_part_of_the_filter() {
        let f = Filter::parse(Kind::Pod, Some("other".into()), None, None).unwrap();
        assert!(!f.matches(&pod(None, "Running", json!({}))));
    }
}
