//! Route match order (docs/reference.md §2.3.1) and canary groups (§2.5): a group's identity, the sort,
//! ids, and effective weights.

use std::collections::HashMap;

use http::Method;

use crate::resource::{Diags, Resource};
use crate::snapshot::{PathMatch, Route, ValueMatch};

/// A compiled route before ordering.
pub(super) struct Pending<'r> {
    pub(super) route: Route,
    pub(super) res: &'r Resource,
    pub(super) group_key: String,
}

pub(super) fn value_match_key(v: &ValueMatch) -> String {
    match v {
        ValueMatch::Present => "p".to_string(),
        ValueMatch::Exact(s) => format!("e{s}"),
        ValueMatch::Regex(r) => format!("r{}", r.as_str()),
    }
}

/// Identity of a canary group (docs/reference.md §2.5). `case_sensitive` matters for regexes, whose
/// compiled form does not show it.
pub(super) fn group_key(r: &Route, case_sensitive: bool) -> String {
    let path = match &r.path {
        PathMatch::Prefix {
            prefix,
            case_sensitive,
        } => format!("p{}{prefix}", u8::from(*case_sensitive)),
        PathMatch::Exact {
            path,
            case_sensitive,
        } => format!("e{}{path}", u8::from(*case_sensitive)),
        PathMatch::Regex { regex, .. } => {
            format!("r{}{}", u8::from(case_sensitive), regex.as_str())
        }
    };
    let mut headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| format!("{}={}", h.name, value_match_key(&h.value)))
        .collect();
    headers.sort();
    let mut query: Vec<String> = r
        .query
        .iter()
        .map(|q| format!("{}={}", q.name, value_match_key(&q.value)))
        .collect();
    query.sort();
    let extra = r.extra.as_ref().map_or(String::new(), |x| {
        format!(
            "{:?}|{}|{}|{}",
            x.port,
            x.host_regex.as_ref().map_or("", |re| re.as_str()),
            x.method_regex.as_ref().map_or("", |re| re.as_str()),
            x.authority.as_ref().map_or(String::new(), value_match_key)
        )
    });
    format!(
        "{}\u{0}{}\u{0}{path}\u{0}{}\u{0}{}\u{0}{}\u{0}{extra}",
        r.precedence,
        r.hostname,
        r.method.as_ref().map(Method::as_str).unwrap_or(""),
        headers.join("\u{1}"),
        query.join("\u{1}")
    )
}

/// Sorts routes into match order (docs/reference.md §2.3.1), keeps canary groups adjacent, assigns ids,
/// groups and effective weights (docs/reference.md §2.5).
pub(super) fn order_and_group(d: &mut Diags, mut pending: Vec<Pending<'_>>) -> Vec<Route> {
    use std::cmp::Reverse;
    let mut first_of_group: HashMap<&str, usize> = HashMap::with_capacity(pending.len());
    let mut keys = Vec::with_capacity(pending.len());
    for (i, pd) in pending.iter().enumerate() {
        let g = *first_of_group
            .entry(pd.group_key.as_str())
            .or_insert(pd.res.order);
        let rt = &pd.route;
        keys.push((
            (
                Reverse(rt.precedence),
                Reverse(rt.hostname.specificity()),
                !matches!(rt.path, PathMatch::Exact { .. }),
                Reverse(rt.path.order_len()),
                Reverse(rt.headers.len()),
                Reverse(rt.query.len()),
                rt.method.is_none(),
                g,
                pd.res.order,
            ),
            i,
        ));
    }
    keys.sort_unstable();
    let mut slots: Vec<Option<Pending<'_>>> = pending.drain(..).map(Some).collect();
    let ordered: Vec<Pending<'_>> = keys
        .iter()
        .filter_map(|(_, i)| slots.get_mut(*i).and_then(Option::take))
        .collect();

    let mut info: Vec<(usize, usize, f64)> = Vec::with_capacity(ordered.len());
    let mut start = 0;
    while start < ordered.len() {
        let mut end = start + 1;
        while end < ordered.len() && ordered[end].group_key == ordered[start].group_key {
            end += 1;
        }
        let group = &ordered[start..end];
        let explicit: u64 = group
            .iter()
            .filter_map(|p| p.route.weight)
            .map(u64::from)
            .sum();
        let unweighted = group.iter().filter(|p| p.route.weight.is_none()).count();
        if explicit > 100 {
            // Report on the member (in file order) whose weight pushes the sum over 100.
            let mut by_file: Vec<&Pending<'_>> =
                group.iter().filter(|p| p.route.weight.is_some()).collect();
            by_file.sort_by_key(|p| p.res.order);
            let mut sum = 0u64;
            let names: Vec<String> = by_file
                .iter()
                .map(|p| format!("Mapping/{} ({})", p.res.name, p.route.weight.unwrap_or(0)))
                .collect();
            for p in &by_file {
                sum += u64::from(p.route.weight.unwrap_or(0));
                if sum > 100 {
                    p.res.error(
                        d,
                        &["spec", "weight"],
                        format!(
                            "canary weights add up to {explicit}, over 100: {}",
                            names.join(", ")
                        ),
                    );
                    break;
                }
            }
        }
        if group.len() > 1 && unweighted == group.len() {
            let mut by_file: Vec<&Pending<'_>> = group.iter().collect();
            by_file.sort_by_key(|p| p.res.order);
            let others: Vec<String> = by_file
                .iter()
                .map(|p| format!("Mapping/{}", p.res.name))
                .collect();
            if let Some(second) = by_file.get(1) {
                second.res.warn(
                    d,
                    &["spec", "prefix"],
                    format!(
                        "{} have an identical match and no weights; traffic is split equally",
                        others.join(", ")
                    ),
                );
            }
        }
        // Explicit weights take their percentage, the others share what is left equally. When
        // every member has a weight and they add up to less than 100, they are scaled to 100
        // (all zero: equal shares), so a group's effective weights always add up to 100.
        let n = group.len() as f64;
        let explicit_f = explicit.min(100) as f64;
        for (k, p) in group.iter().enumerate() {
            let eff = match p.route.weight {
                _ if group.len() == 1 => 100.0,
                Some(w) if unweighted > 0 || explicit >= 100 => f64::from(w),
                Some(_) if explicit == 0 => 100.0 / n,
                Some(w) => f64::from(w) * 100.0 / explicit_f,
                None => (100.0 - explicit_f) / unweighted as f64,
            };
            info.push((start, start + k, eff));
        }
        start = end;
    }
    ordered
        .into_iter()
        .zip(info)
        .map(|(p, (group, id, effective_weight))| {
            let mut route = p.route;
            route.id = id;
            route.group = group;
            route.effective_weight = effective_weight;
            route
        })
        .collect()
}
