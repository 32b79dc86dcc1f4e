//! Quota periods: which DAY, WEEK or MONTH a moment falls in, in UTC days
//! since 1970-01-01, with AWS's offset (the period starts that many days
//! later: weeks on Monday + offset, months on the 1st + offset).
//!
//! The same arithmetic runs inside Redis ([`PERIOD_LUA`], with the server's
//! clock) and here (the in-process backend and the admin API's `GetUsage`);
//! a test keeps the two in step.

use pylon_proto::config::v1::quota::Period;

/// `[start, end)` in days since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    pub fn start_secs(&self) -> i64 {
        self.start * 86_400
    }

    pub fn end_secs(&self) -> i64 {
        self.end * 86_400
    }
}

/// The period `day` (days since the epoch) falls in.
pub fn window(period: Period, offset: u32, day: i64) -> Window {
    let offset = i64::from(offset);
    match period {
        Period::Week => {
            // 1970-01-05 (day 4) was a Monday.
            let start = day - (day - 4 - offset).rem_euclid(7);
            Window {
                start,
                end: start + 7,
            }
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            let mut start = days_from_civil(y, m, 1) + offset;
            if day < start {
                let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
                start = days_from_civil(py, pm, 1) + offset;
            }
            let (sy, sm, _) = civil_from_days(start - offset);
            let (ny, nm) = if sm == 12 { (sy + 1, 1) } else { (sy, sm + 1) };
            Window {
                start,
                end: days_from_civil(ny, nm, 1) + offset,
            }
        }
        Period::Day | Period::Unspecified => Window {
            start: day,
            end: day + 1,
        },
    }
}

/// The period `unix_secs` falls in.
pub fn window_at(period: Period, offset: u32, unix_secs: i64) -> Window {
    window(period, offset, unix_secs.div_euclid(86_400))
}

/// Days since the epoch of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since the epoch.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The same functions in Lua (5.1, as Redis runs it): `period(day, kind,
/// offset)` returns start and end days; kind 1 DAY, 2 WEEK, 3 MONTH.
pub const PERIOD_LUA: &str = r#"
local function fdiv(a, b) return math.floor(a / b) end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = fdiv(y, 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = fdiv(153 * mp + 2, 5) + d - 1
  local doe = yoe * 365 + fdiv(yoe, 4) - fdiv(yoe, 100) + doy
  return era * 146097 + doe - 719468
end
local function civil_from_days(z)
  z = z + 719468
  local era = fdiv(z, 146097)
  local doe = z - era * 146097
  local yoe = fdiv(doe - fdiv(doe, 1460) + fdiv(doe, 36524) - fdiv(doe, 146096), 365)
  local doy = doe - (365 * yoe + fdiv(yoe, 4) - fdiv(yoe, 100))
  local mp = fdiv(5 * doy + 2, 153)
  local d = doy - fdiv(153 * mp + 2, 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function period(day, kind, offset)
  if kind == 2 then
    local start = day - ((day - 4 - offset) % 7)
    return start, start + 7
  elseif kind == 3 then
    local y, m = civil_from_days(day)
    local start = days_from_civil(y, m, 1) + offset
    if day < start then
      if m == 1 then y, m = y - 1, 12 else m = m - 1 end
      start = days_from_civil(y, m, 1) + offset
    end
    if m == 12 then y, m = y + 1, 1 else m = m + 1 end
    return start, days_from_civil(y, m, 1) + offset
  end
  return day, day + 1
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for day in -800_000..800_000 {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 11, 24), 20_781);
    }

    #[test]
    fn weeks_start_on_monday_plus_the_offset() {
        // 2026-11-24 is a Tuesday; its week began Monday 2026-11-23.
        let tuesday = days_from_civil(2026, 11, 24);
        assert_eq!(
            window(Period::Week, 0, tuesday).start,
            days_from_civil(2026, 11, 23)
        );
        // Offset 2: weeks start on Wednesday, so Tuesday is the last day of one.
        let w = window(Period::Week, 2, tuesday);
        assert_eq!(
            (w.start, w.end),
            (days_from_civil(2026, 11, 18), days_from_civil(2026, 11, 25))
        );
    }

    #[test]
    fn months_start_on_the_first_plus_the_offset() {
        let day = days_from_civil(2026, 3, 4);
        let w = window(Period::Month, 0, day);
        assert_eq!(
            (w.start, w.end),
            (days_from_civil(2026, 3, 1), days_from_civil(2026, 4, 1))
        );
        // Offset 9: periods run from the 10th to the 10th; the 4th of March is in February's.
        let w = window(Period::Month, 9, day);
        assert_eq!(
            (w.start, w.end),
            (days_from_civil(2026, 2, 10), days_from_civil(2026, 3, 10))
        );
        // Across a year end.
        let w = window(Period::Month, 9, days_from_civil(2027, 1, 5));
        assert_eq!(
            (w.start, w.end),
            (days_from_civil(2026, 12, 10), days_from_civil(2027, 1, 10))
        );
    }

    #[test]
    fn every_day_lies_in_its_own_window() {
        for period in [Period::Day, Period::Week, Period::Month] {
            for offset in [0, 3, 6] {
                for day in 19_000..21_000 {
                    let w = window(period, offset, day);
                    assert!(w.start <= day && day < w.end, "{period:?} {offset} {day} {w:?}");
                    assert_eq!(
                        window(period, offset, w.end),
                        window(period, offset, w.end),
                        "stable"
                    );
                    assert_eq!(window(period, offset, w.end).start, w.end, "windows tile");
                }
            }
        }
    }
}
