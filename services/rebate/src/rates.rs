//! The arithmetic of a rebate: which month a payment counts in, which rate it gets, how many
//! cents that makes. Pure, so that the rules are tested without a database.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Basis points in a whole: 10 000 bp = 100 %.
pub const BP_PER_UNIT: i64 = 10_000;

/// The rebate on `amount_cents` at `rate_bp`, rounded down to a whole cent (floor): a line
/// never credits a fraction of a cent the payment did not earn, and rounding is per line, so
/// a balance is always the exact sum of its lines. Computed without overflow for any `i64`
/// amount.
pub fn rebate_cents(amount_cents: i64, rate_bp: i32) -> i64 {
    let product = i128::from(amount_cents) * i128::from(rate_bp);
    let floor = product.div_euclid(i128::from(BP_PER_UNIT));
    i64::try_from(floor).unwrap_or(if floor < 0 { i64::MIN } else { i64::MAX })
}

/// The calendar month (UTC) `at` falls in, as its first day: the unit of monthly spend.
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
        .with_day(1)
        .unwrap_or_else(|| at.date_naive())
}

/// One threshold of a version of the tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The month's spend (before the payment) from which it applies.
    pub min_monthly_spend_cents: i64,
    /// Its rate.
    pub rate_bp: i32,
}

/// The rate for a month's spend so far of `spend_before` under one version's `tiers`: the
/// highest threshold reached. Below every threshold (a version without a 0 threshold), 0.
pub fn rate_for(tiers: &[Tier], spend_before: i64) -> i32 {
    tiers
        .iter()
        .filter(|tier| tier.min_monthly_spend_cents <= spend_before)
        .max_by_key(|tier| tier.min_monthly_spend_cents)
        .map_or(0, |tier| tier.rate_bp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebate_is_rounded_down_to_the_cent() {
        assert_eq!(rebate_cents(12_345, 100), 123); // 123.45
        assert_eq!(rebate_cents(99, 100), 0); // 0.99
        assert_eq!(rebate_cents(100, 100), 1);
        assert_eq!(rebate_cents(10_001, 150), 150); // 150.015
        assert_eq!(rebate_cents(0, 200), 0);
        assert_eq!(rebate_cents(-12_345, 100), -124); // floor, also below zero
        assert_eq!(rebate_cents(i64::MAX, 10_000), i64::MAX);
    }

    #[test]
    fn the_month_is_the_utc_calendar_month() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let first = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(month_of(at("2026-03-31T23:59:59Z")), first);
        assert_eq!(month_of(at("2026-03-01T00:00:00Z")), first);
        // 00:30 on April 1st in UTC+2 is still March in UTC.
        assert_eq!(month_of(at("2026-04-01T00:30:00+02:00")), first);
    }

    #[test]
    fn the_rate_is_the_highest_threshold_reached_before_the_payment() {
        let tiers = [
            Tier {
                min_monthly_spend_cents: 0,
                rate_bp: 100,
            },
            Tier {
                min_monthly_spend_cents: 100_000,
                rate_bp: 150,
            },
            Tier {
                min_monthly_spend_cents: 500_000,
                rate_bp: 200,
            },
        ];
        assert_eq!(rate_for(&tiers, 0), 100);
        assert_eq!(rate_for(&tiers, 99_999), 100);
        assert_eq!(rate_for(&tiers, 100_000), 150);
        assert_eq!(rate_for(&tiers, 499_999), 150);
        assert_eq!(rate_for(&tiers, 10_000_000), 200);
        assert_eq!(rate_for(&tiers[1..], 5), 0);
        assert_eq!(rate_for(&[], 5), 0);
    }
}
