//! Verdicts that survive the machine's noise: a target judged over several runs is met only
//! when the median of the runs meets it **and** at least seven runs in nine do (the same share
//! of another number of runs, rounded up), and the verdict is printed with every run's figure
//! and the spread, so that a reader sees how close it was.

use serde::Serialize;

/// The share of runs that must meet a target, as a fraction: 7 of 9.
const RUNS_MEETING: (usize, usize) = (7, 9);

/// A target judged over runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Judged {
    /// Each run's figure, in the order measured.
    pub(crate) runs: Vec<f64>,
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
    /// Runs whose figure meets the target.
    pub(crate) meeting: usize,
    /// Runs that must meet it.
    pub(crate) required: usize,
    /// The median meets it and at least `required` runs do.
    pub(crate) met: bool,
}

impl Judged {
    /// Judges `runs` (one figure per run) by `meets`.
    pub(crate) fn new(runs: Vec<f64>, meets: impl Fn(f64) -> bool) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = crate::median(sorted.clone());
        let meeting = runs.iter().filter(|&&r| meets(r)).count();
        let required = required(runs.len());
        Self {
            min: sorted.first().copied().unwrap_or(f64::NAN),
            max: sorted.last().copied().unwrap_or(f64::NAN),
            met: !runs.is_empty() && meets(median) && meeting >= required,
            runs,
            median,
            meeting,
            required,
        }
    }

    /// "met" or "not met".
    pub(crate) fn verdict(&self) -> &'static str {
        crate::verdict(self.met)
    }

    /// The runs and the spread, each figure formatted by `fmt`: `runs 0.97 0.99 ...; min
    /// 0.95, median 0.98, max 1.01; 8 of 9 runs meet it (7 needed)`.
    pub(crate) fn spread(&self, fmt: impl Fn(f64) -> String) -> String {
        let runs: Vec<String> = self.runs.iter().map(|&r| fmt(r)).collect();
        format!(
            "runs {}; min {}, median {}, max {}; {} of {} runs meet it ({} needed)",
            runs.join(" "),
            fmt(self.min),
            fmt(self.median),
            fmt(self.max),
            self.meeting,
            self.runs.len(),
            self.required
        )
    }
}

/// How many of `runs` must meet a target: 7 of 9, the same share of others rounded up.
pub(crate) fn required(runs: usize) -> usize {
    let (meet, of) = RUNS_MEETING;
    (runs * meet).div_ceil(of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_of_nine_runs_and_the_median_must_meet_the_target() {
        let at_least = |target: f64| move |r: f64| r >= target;
        // Seven of nine meet it, and the median does.
        let met = Judged::new(
            vec![0.96, 0.97, 0.90, 0.98, 0.95, 0.99, 0.93, 0.96, 0.97],
            at_least(0.95),
        );
        assert_eq!((met.meeting, met.required), (7, 7));
        assert!(met.met);
        assert_eq!((met.min, met.median, met.max), (0.90, 0.96, 0.99));
        // The median meets it, but only six runs do.
        let six = Judged::new(
            vec![0.96, 0.97, 0.90, 0.98, 0.94, 0.99, 0.93, 0.96, 0.97],
            at_least(0.95),
        );
        assert_eq!(six.meeting, 6);
        assert!(six.meets_median_only());
        assert!(!six.met);
        // Nothing measured is not met.
        assert!(!Judged::new(vec![], at_least(0.95)).met);
    }

    #[test]
    fn other_run_counts_need_the_same_share() {
        assert_eq!(required(9), 7);
        assert_eq!(required(3), 3);
        assert_eq!(required(5), 4);
        assert_eq!(required(1), 1);
    }

    #[test]
    fn the_spread_lists_every_run() {
        let judged = Judged::new(vec![1.0, 3.0, 2.0], |r| r <= 2.5);
        assert_eq!(
            judged.spread(|r| format!("{r:.1}")),
            "runs 1.0 3.0 2.0; min 1.0, median 2.0, max 3.0; 2 of 3 runs meet it (3 needed)"
        );
        assert_eq!(judged.verdict(), "not met");
    }

    impl Judged {
        fn meets_median_only(&self) -> bool {
            self.meeting < self.required && self.median >= 0.95
        }
    }
}
