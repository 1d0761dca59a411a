//! Who holds the single slot of a primary/backup VIP (the "writer", e.g. of a Galera cluster).
//!
//! Sticky, like HAProxy's `stick on dst`: once a backend holds the slot it keeps it for as long
//! as it is eligible, whatever the priorities say, because a Galera writer switch is a
//! disruption of its own. Moving the slot moves new connections only: established ones stay
//! on the old writer through the flow table or second chance until they end (as with HAProxy,
//! which keeps established sessions on a server switch), so for a while after a `promote`
//! both backends take writes; `disable` the old writer to cut them. Only when the
//! current writer becomes ineligible does the slot go to the eligible backend with the lowest
//! priority. Going back to the preferred backend is an operator decision (`vipd backend
//! promote`, which names the new writer) or the VIP's opt-in `failback = true`.
//!
//! Pure: the caller says who writes now (the live table's slot, or the state file after a
//! restart with fresh maps) and which backends are eligible.

/// A backend of a primary/backup VIP as the choice sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Index in the `BACKENDS` map (what the table slot holds).
    pub index: u32,
    /// Lower is preferred (`vip.backend.priority`).
    pub priority: u8,
    /// Up, enabled, weight > 0, reachable: may get traffic.
    pub eligible: bool,
}

/// The backend that gets the slot, or None when no backend is eligible.
///
/// `current`: the writer now (None: nobody, e.g. the first table). `failback`: the VIP always
/// wants its preferred backend, so the current writer gets no precedence.
pub fn choose(candidates: &[Candidate], current: Option<u32>, failback: bool) -> Option<u32> {
    let eligible = || candidates.iter().filter(|c| c.eligible);
    if !failback {
        if let Some(kept) = current.filter(|&w| eligible().any(|c| c.index == w)) {
            return Some(kept);
        }
    }
    // Ties cannot happen within a valid config (priorities are distinct); the index keeps
    // the choice deterministic anyway.
    eligible()
        .min_by_key(|c| (c.priority, c.index))
        .map(|c| c.index)
}

/// After a restart that recreated the maps, every backend starts down and returns after
/// `rise` probes, in whatever order the probes happen to complete: the remembered writer
/// (`restored`) gets until `deadline` to come back before the slot goes to another, or the
/// restart would hand it to whoever passed first. Whether to leave the slot empty for now,
/// given the backend the choice would pick (`chosen`).
pub fn hold_for_restored<T: PartialOrd>(
    restored: Option<u32>,
    chosen: Option<u32>,
    now: T,
    deadline: T,
) -> bool {
    restored.is_some() && chosen != restored && now < deadline
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: u32 = 10;
    const BACKUP: u32 = 11;
    const THIRD: u32 = 12;

    fn galera(primary_up: bool, backup_up: bool, third_up: bool) -> Vec<Candidate> {
        vec![
            Candidate {
                index: PRIMARY,
                priority: 0,
                eligible: primary_up,
            },
            Candidate {
                index: BACKUP,
                priority: 1,
                eligible: backup_up,
            },
            Candidate {
                index: THIRD,
                priority: 2,
                eligible: third_up,
            },
        ]
    }

    #[test]
    fn first_table_goes_to_the_lowest_priority() {
        assert_eq!(
            choose(&galera(true, true, true), None, false),
            Some(PRIMARY)
        );
        assert_eq!(
            choose(&galera(false, true, true), None, false),
            Some(BACKUP)
        );
        assert_eq!(choose(&galera(false, false, false), None, false), None);
    }

    /// The whole story: primary dies, comes back (the backup keeps writing), the backup dies
    /// (back to the primary).
    #[test]
    fn the_writer_sticks_until_it_is_ineligible() {
        let mut writer = choose(&galera(true, true, true), None, false);
        assert_eq!(writer, Some(PRIMARY));
        writer = choose(&galera(false, true, true), writer, false);
        assert_eq!(writer, Some(BACKUP), "primary dies -> backup");
        writer = choose(&galera(true, true, true), writer, false);
        assert_eq!(writer, Some(BACKUP), "primary returns -> backup kept");
        writer = choose(&galera(true, false, true), writer, false);
        assert_eq!(writer, Some(PRIMARY), "backup dies -> primary");
    }

    #[test]
    fn an_ineligible_writer_gives_way_to_the_best_eligible_by_priority() {
        // The backup writes and dies while the primary is still down: the third takes over,
        // and keeps the slot when the primary and then the backup return.
        let w = choose(&galera(false, false, true), Some(BACKUP), false);
        assert_eq!(w, Some(THIRD));
        assert_eq!(choose(&galera(true, true, true), w, false), Some(THIRD));
    }

    #[test]
    fn failback_always_returns_to_the_preferred_backend() {
        let w = choose(&galera(false, true, true), Some(PRIMARY), true);
        assert_eq!(w, Some(BACKUP));
        assert_eq!(choose(&galera(true, true, true), w, true), Some(PRIMARY));
    }

    /// Promote names the new writer: the caller passes it as the current one and it stays
    /// (the daemon checks that it is eligible before).
    #[test]
    fn promote_hands_the_slot_to_the_named_backend() {
        assert_eq!(
            choose(&galera(true, true, true), Some(PRIMARY), false),
            Some(PRIMARY)
        );
        assert_eq!(
            choose(&galera(true, true, true), Some(THIRD), false),
            Some(THIRD)
        );
    }

    #[test]
    fn a_restored_writer_is_waited_for_until_its_deadline() {
        // ctl2 wrote before the restart; ctl1 passes its checks first.
        let early = choose(&galera(true, false, false), Some(BACKUP), false);
        assert_eq!(early, Some(PRIMARY));
        assert!(
            hold_for_restored(Some(BACKUP), early, 1, 5),
            "wait for the writer"
        );
        assert!(
            !hold_for_restored(Some(BACKUP), early, 5, 5),
            "it did not come back"
        );
        let back = choose(&galera(true, true, false), Some(BACKUP), false);
        assert!(!hold_for_restored(Some(BACKUP), back, 1, 5), "it is back");
        assert!(!hold_for_restored(None, early, 1, 5), "nothing remembered");
    }

    #[test]
    fn a_writer_that_is_no_candidate_is_ignored() {
        // A backend removed by a reload (its index no longer in the VIP).
        assert_eq!(
            choose(&galera(true, true, true), Some(99), false),
            Some(PRIMARY)
        );
    }
}
