//! Detection figures for 3, 5 and 7 controllers: vipd alone (no competitors, no probe load)
//! in the test harness's cluster (`crate::cluster`, every node a voter, the lab's timings and
//! heartbeat detector, a fencing hook that succeeds at once). Each trial cuts the VIP owner's
//! link and SIGKILLs its vipd, then reads the survivors' logs: when each took the owner for
//! dead (heartbeat silence; SWIM's verdict comes later and is reported too) and when one
//! claimed the VIP. Log timestamps (UTC, microseconds) against the wall clock at the cut: no
//! polling that would load the nodes being measured.
use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    cluster::{Cluster, HEARTBEAT, TEST_TIMING},
    lab::{pause, story::Story},
};

pub const SIZES: [usize; 3] = [3, 5, 7];

/// One owner loss, measured from the cut (None: not seen within the trial's time).
#[derive(Clone, Debug, Default)]
pub struct Detected {
    /// The first survivor, and the last, to take the owner for dead (heartbeat silence).
    pub first: Option<Duration>,
    pub all: Option<Duration>,
    /// Every survivor's SWIM declared the owner dead.
    pub swim_all: Option<Duration>,
    /// A survivor claimed the VIP.
    pub claimed: Option<Duration>,
}

pub struct Detection {
    pub nodes: usize,
    pub trials: Vec<Detected>,
}

const TRIAL_TIME: Duration = Duration::from_secs(15);

pub fn measure(vipd: &Path, trials: usize, story: &Story) -> anyhow::Result<Vec<Detection>> {
    let mut all = Vec::new();
    if trials == 0 {
        return Ok(all);
    }
    for n in SIZES {
        let extra = format!("{TEST_TIMING}\n{HEARTBEAT}\nfence_command = [\"true\"]");
        let mut cluster = Cluster::launch_sized_bin(n, &extra, "", vipd);
        let mut owner = cluster.wait_single_owner(Duration::from_secs(30));
        let mut done = Vec::new();
        for t in 0..trials {
            let d = lose(&mut cluster, owner)?;
            story.say(format!(
                "{n} nodes, trial {}/{trials}: ctl{} lost; first detector {}, all {}, SWIM all {}, claimed {}",
                t + 1,
                owner + 1,
                ms(d.first),
                ms(d.all),
                ms(d.swim_all),
                ms(d.claimed)
            ));
            done.push(d);
            revive(&mut cluster, owner)?;
            owner = cluster.wait_single_owner(Duration::from_secs(30));
        }
        all.push(Detection {
            nodes: n,
            trials: done,
        });
    }
    Ok(all)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{} ms", d.as_millis()))
}

/// Cuts `owner` off and SIGKILLs its vipd; reads the others' logs until each saw it dead
/// and one claimed the VIP (or [`TRIAL_TIME`] passed).
fn lose(cluster: &mut Cluster, owner: usize) -> anyhow::Result<Detected> {
    let victim = format!("member={}", cluster.nodes[owner].name);
    let survivors: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != owner).collect();
    let marks: Vec<usize> = survivors
        .iter()
        .map(|&i| cluster.nodes[i].vipd.logs().len())
        .collect();
    let iface = cluster.host(owner).iface.clone();
    let cut = SystemTime::now();
    cluster
        .host(owner)
        .ns
        .exec(&["ip", "link", "set", &iface, "down"]);
    cluster.nodes[owner].vipd.kill9();
    let started = Instant::now();
    loop {
        let lines: Vec<String> = survivors
            .iter()
            .zip(&marks)
            .map(|(&i, &mark)| {
                cluster.nodes[i]
                    .vipd
                    .logs()
                    .get(mark..)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        let first_of = |log: &str, what: &str, member: bool| {
            log.lines()
                .filter(|l| l.contains(what) && (!member || l.contains(&victim)))
                .find_map(|l| logged_at(l)?.duration_since(cut).ok())
        };
        let silent: Vec<Option<Duration>> = lines
            .iter()
            .map(|l| first_of(l, "member silent on every link", true))
            .collect();
        let swim: Vec<Option<Duration>> = lines
            .iter()
            .map(|l| first_of(l, "member down: SWIM", true))
            .collect();
        let claimed = lines
            .iter()
            .filter_map(|l| first_of(l, "claiming VIP", false))
            .min();
        let every = |v: &[Option<Duration>]| v.iter().copied().collect::<Option<Vec<_>>>();
        let d = Detected {
            first: silent.iter().flatten().min().copied(),
            all: every(&silent).and_then(|v| v.into_iter().max()),
            swim_all: every(&swim).and_then(|v| v.into_iter().max()),
            claimed,
        };
        if (d.all.is_some() && d.swim_all.is_some() && d.claimed.is_some())
            || started.elapsed() > TRIAL_TIME
        {
            return Ok(d);
        }
        pause(Duration::from_millis(100))?;
    }
}

/// Link up, vipd started again; waits until every node counts every member alive.
fn revive(cluster: &mut Cluster, i: usize) -> anyhow::Result<()> {
    let iface = cluster.host(i).iface.clone();
    cluster
        .host(i)
        .ns
        .exec(&["ip", "link", "set", &iface, "up"]);
    cluster.nodes[i].vipd.spawn();
    let n = cluster.nodes.len();
    let started = Instant::now();
    loop {
        let alive = cluster.nodes.iter().all(|node| {
            node.vipd.status_json()["cluster"]["members"]
                .as_array()
                .is_some_and(|m| {
                    m.iter()
                        .filter(|m| m["state"] == "alive" || m["state"] == "self")
                        .count()
                        == n
                })
        });
        if alive {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "ctl{} not back among the {n} after 30 s",
            i + 1
        );
        pause(Duration::from_millis(100))?;
    }
}

/// The time at the start of a vipd log line (`2026-12-07T08:43:26.123456Z ...`, UTC).
fn logged_at(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let min: u64 = hms.next()?.parse().ok()?;
    let secs: f64 = hms.next()?.parse().ok()?;
    let days = u64::try_from(days_from_civil(y, m, d)).ok()?;
    let whole = days * 86_400 + h * 3600 + min * 60;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(whole) + Duration::from_secs_f64(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_read_as_utc_wall_clock() {
        let line = "2026-12-07T08:43:26.250000Z  WARN vipd::app::cluster: member silent on every link: taken for dead member=ctl1";
        let at = logged_at(line).unwrap();
        // `date -u -d 2026-12-07T08:43:26Z +%s`
        let expected = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_633_006_250);
        assert_eq!(at, expected);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert!(logged_at("vipd starting").is_none());
    }
}
