//! The `[schedule] cron` expression: parsed exactly as tokio-cron-scheduler parses it.
//!
//! Depends on no other farmsync module; the daemon schedules with it, config validates with it.

use chrono::{DateTime, Duration, TimeZone};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Parses a seconds-first, six-field cron expression.
pub fn parse(expr: &str) -> Result<Cron, String> {
    if expr.split_whitespace().count() != 6 {
        return Err(format!(
            "{expr:?} has {} fields; expected six, seconds first, e.g. \"0 */5 * * * *\"",
            expr.split_whitespace().count()
        ));
    }
    // The same parser settings as tokio-cron-scheduler's, so `status` predicts its fire times.
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// The next fire time strictly after `after`.
pub fn next_after<Tz: TimeZone>(cron: &Cron, after: &DateTime<Tz>) -> Option<DateTime<Tz>> {
    cron.find_next_occurrence(after, false).ok()
}

/// The interval between the next two fire times after `after` (the schedule's period).
pub fn period_after<Tz: TimeZone>(cron: &Cron, after: &DateTime<Tz>) -> Option<Duration> {
    let first = next_after(cron, after)?;
    let second = next_after(cron, &first)?;
    Some(second - first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn parses_seconds_first_and_rejects_five_fields() {
        assert!(parse("0 */5 * * * *").is_ok());
        assert!(parse("*/5 * * * *").unwrap_err().contains("six"));
        assert!(parse("0 */5 * * * banana").is_err());
    }

    #[test]
    fn period_is_the_gap_between_the_next_two_fires() {
        let cron = parse("0 */5 * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 10, 2, 0).unwrap();
        assert_eq!(
            next_after(&cron, &t).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 26, 10, 5, 0).unwrap()
        );
        assert_eq!(period_after(&cron, &t).unwrap(), Duration::minutes(5));
        // Day of month AND day of week must both match, as the scheduler reads it.
        let first_monday_of_a_month = parse("0 0 0 1 * Mon").unwrap();
        assert_eq!(
            next_after(&first_monday_of_a_month, &t).unwrap(),
            Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap()
        );
        let every_second = parse("* * * * * *").unwrap();
        assert_eq!(
            period_after(&every_second, &t).unwrap(),
            Duration::seconds(1)
        );
    }
}
