//! Counterexamples as readable traces: the steps replayed with what each node was told and
//! what it did.

use std::fmt::Write as _;

use crate::actor::Effects;
use crate::model::{Step, World};
use crate::properties::owners;
use crate::Setup;

/// Replays `steps` from `start`, one block per step.
pub fn explain(setup: &Setup, start: &World, steps: &[Step]) -> String {
    let mut out = String::new();
    let mut w = start.clone();
    let _ = writeln!(out, "start: t={} {}", w.t, summary(&w));
    for step in steps {
        let mut fx = Effects {
            verbose: true,
            ..Effects::default()
        };
        w = setup.next(&w, step, &mut fx);
        let _ = writeln!(out, "{step:?} -> t={} {}", w.t, summary(&w));
        for line in fx.log {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// One line per state: who runs, clocks, addresses, leases and the owner count.
pub fn summary(w: &World) -> String {
    let nodes: Vec<String> = (w.nodes.iter().enumerate())
        .map(|(i, n)| {
            let run = match (n.own.is_some(), n.off) {
                (true, _) => "up",
                (false, true) => "OFF",
                (false, false) => "down",
            };
            let lease = n.lease.map_or("-".into(), |u| u.to_string());
            let addr = if n.addr { "+addr" } else { "" };
            format!("n{i}[{run} local={} lease<{lease}{addr}]", n.local(w.t))
        })
        .collect();
    let cut = if w.cut == 0 {
        String::new()
    } else {
        format!(" cut={:b}", w.cut)
    };
    format!("{}{cut} owners={}", nodes.join(" "), owners(w))
}
