//! A hint that needs no compiled config: a Mapping whose exact `hostname` matches no Host,
//! while Hosts exist, is probably a typo. Over HTTPS no certificate is offered for the name;
//! over HTTP the Mapping is still routed, but no Host's request policy applies to it. Read
//! from the parsed documents, so the warning also appears next to other errors.

use crate::resource::{Diags, Resource};

/// A Host or Mapping hostname without its port, lower-cased.
fn bare(h: &str) -> String {
    let h = h.trim().to_ascii_lowercase();
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_string()
        }
        _ => h,
    }
}

/// Whether the Host glob `glob` covers the exact name `name`.
fn covers(glob: &str, name: &str) -> bool {
    glob == "*"
        || glob == name
        || glob
            .strip_prefix("*.")
            .is_some_and(|suffix| name.ends_with(&format!(".{suffix}")))
}

fn spec_text(r: &Resource, keys: &[&str]) -> Option<String> {
    let spec = r.root.get("spec")?;
    keys.iter()
        .find_map(|k| spec.get(k).and_then(|n| n.as_text()).map(|t| t.to_string()))
}

/// Warns about each Mapping with an exact hostname that no Host covers. Runs after
/// compilation: when the config is valid and every Listener is HTTPS, the compiled-config lint
/// (`describe::lint`) already says such a Mapping never receives traffic.
pub(crate) fn check(resources: &[Resource], d: &mut Diags) {
    let listeners: Vec<&Resource> = resources.iter().filter(|r| r.kind == "Listener").collect();
    let all_tls = !listeners.is_empty()
        && listeners.iter().all(|l| {
            spec_text(l, &["protocol"]).is_some_and(|p| {
                p.eq_ignore_ascii_case("HTTPS") || p.eq_ignore_ascii_case("HTTPSPROXY")
            })
        });
    if all_tls && !d.list.iter().any(|x| x.is_error()) {
        return;
    }
    let hosts: Vec<String> = resources
        .iter()
        .filter(|r| r.kind == "Host")
        .map(|r| bare(&spec_text(r, &["hostname"]).unwrap_or_else(|| "*".into())))
        .collect();
    if hosts.is_empty() {
        return;
    }
    for r in resources.iter().filter(|r| r.kind == "Mapping") {
        let Some(raw) = spec_text(r, &["hostname", "host"]) else {
            continue;
        };
        let name = bare(&raw);
        if name.contains('*') || hosts.iter().any(|h| covers(h, &name)) {
            continue;
        }
        let key = if r.root.get("spec").and_then(|s| s.get("hostname")).is_some() {
            "hostname"
        } else {
            "host"
        };
        r.warn(
            d,
            &["spec", key],
            format!(
                "hostname `{raw}` matches no Host ({}): over HTTPS no certificate is offered for it; over HTTP it is routed, but no Host's request policy applies",
                hosts.join(", ")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::{ConfigSource, load};
    use std::path::PathBuf;

    fn run(text: &str) -> Vec<String> {
        let r = load(&[ConfigSource::Inline {
            name: "t.yaml".into(),
            text: text.into(),
            base_dir: PathBuf::from("."),
        }]);
        r.diagnostics.iter().map(|d| d.to_string()).collect()
    }

    const HOST: &str = "apiVersion: portico.dev/v1\nkind: Host\nmetadata: { name: o }\nspec:\n  hostname: \"*.other.example\"\n";

    #[test]
    fn mapping_hostname_matching_no_host_warns_on_http_also_beside_errors() {
        let m = "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: h }\nspec:\n  hostname: api.example.com\n  prefix: /h/\n  service: a:80\n";
        let bad = "apiVersion: portico.dev/v1\nkind: Mapping\nmetadata: { name: b }\nspec:\n  prefix: /b/\n  service: a:80\n  bogus: 1\n";
        let d = run(&format!("{HOST}---\n{m}---\n{bad}"));
        let w = d
            .iter()
            .find(|l| l.contains("matches no Host"))
            .unwrap_or_else(|| panic!("{d:?}"));
        assert!(
            w.starts_with("t.yaml:11:3: Mapping/h: warning: hostname `api.example.com`"),
            "{w}"
        );
        assert!(d.iter().any(|l| l.contains("bogus")), "{d:?}");
        // Covered names and wildcards: no warning; no Hosts at all: no warning.
        let ok = m.replace("api.example.com", "api.other.example");
        assert!(
            !run(&format!("{HOST}---\n{ok}"))
                .iter()
                .any(|l| l.contains("matches no Host"))
        );
        assert!(!run(m).iter().any(|l| l.contains("matches no Host")));
    }
}
