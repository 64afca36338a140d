//! Kubernetes label selectors as CoreDNS's `labels` and `namespace_labels` take them:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, comma-separated.
use super::view::Labels;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Req>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("label selector `{0}`: {1}")]
pub struct SelectorError(pub String, pub &'static str);

impl Selector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let err = |m| SelectorError(s.to_owned(), m);
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some((k, rest)) = part.split_once(" notin ") {
                Req::NotIn(
                    key(k).ok_or(err("bad key"))?,
                    set(rest).ok_or(err("bad set"))?,
                )
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Req::In(
                    key(k).ok_or(err("bad key"))?,
                    set(rest).ok_or(err("bad set"))?,
                )
            } else if let Some((k, v)) = part.split_once("!=") {
                Req::NotIn(key(k).ok_or(err("bad key"))?, vec![v.trim().to_owned()])
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Req::In(key(k).ok_or(err("bad key"))?, vec![v.trim().to_owned()])
            } else if let Some(k) = part.strip_prefix('!') {
                Req::Absent(key(k).ok_or(err("bad key"))?)
            } else {
                Req::Exists(key(part).ok_or(err("bad key"))?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    /// The label keys the selector reads: labels under other keys never change a match.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|r| match r {
            Req::In(k, _) | Req::NotIn(k, _) | Req::Exists(k) | Req::Absent(k) => k.as_str(),
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| match r {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::Absent(k) => !labels.contains_key(k),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn key(k: &str) -> Option<String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    ok.then(|| k.to_owned())
}

fn set(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(inner.split(',').map(|v| v.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> Labels {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_forms() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, db)",
            "env notin (prod)",
            "app",
            "!env",
            "app=web,tier=front",
        ];
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "tier notin (front,back)",
            "env",
            "!app",
            "app=web,tier=back",
        ];
        for s in yes {
            assert!(Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        for s in no {
            assert!(!Selector::parse(s).unwrap().matches(&l), "{s}");
        }
        assert!(Selector::parse("a b=c").is_err());
        assert!(Selector::parse("a in b").is_err());
    }
}
