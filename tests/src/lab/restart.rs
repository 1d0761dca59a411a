//! A planned vipd restart under client load: leave, stop, start, and count what the client
//! saw. The data plane stays pinned and forwarding while vipd is away, and every node has the
//! same tables, so nothing should fail.
use std::time::{Duration, Instant};

use vip_daemon::shell::status::Status;

use super::{
    config::{API_VIP, CONTROLLERS, DB_VIP},
    pause,
    running::{holders, Lab},
    story::Story,
    traffic::{since, Snapshot},
};

#[derive(Debug)]
pub struct RestartUnderLoad {
    pub node: &'static str,
    /// The VIPs it held before (a leave hands them over).
    pub owned: Vec<String>,
    /// From `vipd leave` until the cluster converged again with it.
    pub back_after: Duration,
    /// Per VIP it held: (holder, epoch) as every node agreed before the leave, and after the
    /// restart settled. A handover is one epoch; a move back would be a second one.
    pub before: Vec<(String, Option<(String, u64)>)>,
    pub after: Vec<(String, Option<(String, u64)>)>,
    pub errors: u64,
    pub answered: u64,
    /// Per service: (answered, failed), to say where a failure was.
    pub by_service: Vec<(&'static str, u64, u64)>,
}

/// Restarts the vipd of the API VIP's owner (the node with the most to lose).
pub fn restart_under_load(lab: &mut Lab, story: &Story) -> anyhow::Result<RestartUnderLoad> {
    let all = lab.statuses(Duration::from_millis(300));
    let owner = holders(&all, API_VIP).first().cloned().unwrap_or_default();
    let i = CONTROLLERS.iter().position(|n| *n == owner).unwrap_or(0);
    let node = CONTROLLERS[i];
    let owned: Vec<String> = [API_VIP, DB_VIP]
        .iter()
        .filter(|&&v| holders(&all, v).iter().any(|h| h == node))
        .map(|v| v.to_string())
        .collect();
    let agreed_before = agreed(&all, &owned);
    let before = snapshot(lab);
    let start = Instant::now();
    story.say(format!(
        "restarting vipd on {node} (holds {owned:?}): vipd leave, stop, start"
    ));
    lab.nodes[i].restart_vipd()?;
    story.say(format!(
        "{node}: vipd back up after {:.0?}",
        start.elapsed()
    ));
    lab.wait_converged(Duration::from_secs(15))?;
    let back_after = start.elapsed();
    // Requests still in flight finish (or time out) before the count; the restarted node
    // is past its settle time by then, so a move back would have happened.
    pause(Duration::from_secs(1))?;
    let agreed_after = agreed(&lab.statuses(Duration::from_millis(300)), &owned);
    let seen = since(&snapshot(lab), &before);
    let errors = seen.values().map(|c| c.errors).sum();
    let answered = seen.values().map(|c| c.answered()).sum();
    let by_service = seen
        .iter()
        .map(|(name, c)| (*name, c.answered(), c.errors))
        .collect();
    story.say(format!(
        "converged {back_after:.1?} after the leave; {answered} requests answered, {errors} failed"
    ));
    Ok(RestartUnderLoad {
        node,
        owned,
        back_after,
        before: agreed_before,
        after: agreed_after,
        errors,
        answered,
        by_service,
    })
}

/// Per VIP: the (owner, epoch) every answering node reports, `None` where they disagree.
fn agreed(all: &[Option<Status>], vips: &[String]) -> Vec<(String, Option<(String, u64)>)> {
    vips.iter()
        .map(|vip| {
            let seen: Vec<Option<(String, u64)>> = (all.iter().flatten())
                .filter_map(|s| s.cluster.as_ref())
                .map(|c| {
                    let o = c.owners.iter().find(|o| o.vip == *vip)?;
                    Some((o.owner.clone()?, o.epoch))
                })
                .collect();
            let first = seen.first().cloned().flatten();
            let same = seen.iter().all(|s| *s == first);
            (vip.clone(), first.filter(|_| same && seen.len() == 3))
        })
        .collect()
}

fn snapshot(lab: &Lab) -> Snapshot {
    lab.traffic
        .as_ref()
        .map(|t| t.snapshot())
        .unwrap_or_default()
}
