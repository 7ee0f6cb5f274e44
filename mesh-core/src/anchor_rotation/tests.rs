//! The rotation's schedule bounds and its transitions, table-style over time passed in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn schedule() -> RotationSchedule {
    RotationSchedule {
        root_lifetime: Duration::from_secs(300),
        rotate_at_percent: 50,
        ack_timeout: Duration::from_secs(20),
    }
}

/// A root valid from 0 to 300, nothing acked or renewed, a last A leaf expiring at 200.
fn seen(now: u64) -> Observed {
    Observed {
        now: at(now),
        root_not_before: at(0),
        root_not_after: at(300),
        all_acked: false,
        all_on_next: false,
        old_leaves_until: Some(at(200)),
    }
}

#[test]
fn defaults_are_a_year_rotated_at_two_thirds() {
    let s = RotationSchedule::default();
    assert_eq!(s.root_lifetime, DEFAULT_ROOT_LIFETIME);
    assert_eq!(s.rotate_at_percent, 66);
    assert_eq!(s.check(Duration::from_secs(24 * 3600)), Ok(()));
}

#[test]
fn schedule_bounds_name_the_field() {
    let leaf = Duration::from_secs(10);
    let cases: Vec<(RotationSchedule, &str)> = vec![
        (
            RotationSchedule {
                root_lifetime: Duration::from_secs(9),
                ..schedule()
            },
            "root_rotation.root_lifetime: 9s is below",
        ),
        (
            RotationSchedule {
                rotate_at_percent: 49,
                ..schedule()
            },
            "root_rotation.rotate_at_percent: 49",
        ),
        (
            RotationSchedule {
                rotate_at_percent: 91,
                ..schedule()
            },
            "root_rotation.rotate_at_percent: 91",
        ),
        (
            RotationSchedule {
                ack_timeout: Duration::from_millis(500),
                ..schedule()
            },
            "root_rotation.ack_timeout",
        ),
        (
            // 150 s left at 50 %; 20 s of ACKs plus a 130 s leaf does not fit.
            RotationSchedule { ..schedule() },
            "",
        ),
    ];
    for (s, want) in cases {
        let got = s.check(if want.is_empty() {
            Duration::from_secs(130)
        } else {
            leaf
        });
        let message = got.expect_err("refused").to_string();
        let want = if want.is_empty() {
            "the rotation needs ack_timeout"
        } else {
            want
        };
        assert!(message.contains(want), "{message} !~ {want}");
    }
    assert_eq!(schedule().check(Duration::from_secs(129)), Ok(()));
}

#[test]
fn transitions() {
    use Phase::*;
    let s = schedule();
    let acked = |now| Observed {
        all_acked: true,
        ..seen(now)
    };
    let on_next = |now| Observed {
        all_on_next: true,
        ..seen(now)
    };
    let none_signed = |now| Observed {
        old_leaves_until: None,
        ..seen(now)
    };
    // (phase, entered at, observed, step)
    let cases: Vec<(Phase, u64, Observed, Step)> = vec![
        (Steady, 0, seen(149), Step::Stay),
        (Steady, 0, seen(150), Step::StartOverlap),
        (Steady, 0, acked(10), Step::Stay),
        (Overlap, 150, seen(169), Step::Stay),
        (
            Overlap,
            150,
            acked(151),
            Step::SwitchIssuer(SwitchReason::Acked),
        ),
        (
            Overlap,
            150,
            seen(170),
            Step::SwitchIssuer(SwitchReason::AckTimeout),
        ),
        (IssuingNext, 160, seen(199), Step::Stay),
        (
            IssuingNext,
            160,
            seen(200),
            Step::DropOld(DropReason::OldLeavesExpired),
        ),
        (
            IssuingNext,
            160,
            on_next(161),
            Step::DropOld(DropReason::AllOnNext),
        ),
        (
            IssuingNext,
            160,
            none_signed(161),
            Step::DropOld(DropReason::OldLeavesExpired),
        ),
        (
            IssuingNext,
            160,
            Observed {
                old_leaves_until: Some(at(400)),
                ..seen(300)
            },
            Step::DropOld(DropReason::RootExpired),
        ),
    ];
    for (phase, since, observed, want) in cases {
        let rotation = Rotation {
            phase,
            since: at(since),
        };
        assert_eq!(
            rotation.decide(&s, &observed),
            want,
            "{phase:?} since {since} at {:?}",
            observed.now
        );
    }
}

#[test]
fn a_whole_rotation_passes_the_phases_in_order() {
    let s = schedule();
    let mut rotation = Rotation::steady(at(0));
    let mut phases = vec![rotation.phase];
    for now in 0..=400 {
        let observed = Observed {
            all_acked: now >= 155,
            ..seen(now)
        };
        let step = rotation.decide(&s, &observed);
        if step != Step::Stay {
            rotation = rotation.after(step, at(now));
            phases.push(rotation.phase);
        }
        if rotation.phase == Phase::Steady && phases.len() > 1 {
            break;
        }
    }
    assert_eq!(
        phases,
        [
            Phase::Steady,
            Phase::Overlap,
            Phase::IssuingNext,
            Phase::Steady
        ]
    );
    assert_eq!(rotation.since, at(200));
    assert_eq!(
        Phase::IssuingNext.as_gauge(),
        2,
        "the gauge's numbering is documented"
    );
}
